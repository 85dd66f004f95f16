// The service's REST API as the demo page calls it: one fetch per call, the API key from
// the session, and every failure as an ApiError in the API's error shape.

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    Object.assign(this, { status, code, details });
  }
}

const KEY = "ams-api-key";

export const apiKey = () => sessionStorage.getItem(KEY) || "";
export const setApiKey = (key) => sessionStorage.setItem(KEY, key);

export const enc = encodeURIComponent;

// One call; resolves to the JSON answer (null for 204), throws ApiError with the API's
// error shape ({"error": {"code", "message", "details"}}) or a made-up one for other failures.
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload });
  } catch (err) {
    throw new ApiError(0, "network", `the service did not answer (${err.message})`);
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const e = data && data.error;
    if (e && e.code) throw new ApiError(response.status, e.code, e.message, e.details);
    throw new ApiError(response.status, `http_${response.status}`, text.slice(0, 300) || response.statusText);
  }
  return data;
}
