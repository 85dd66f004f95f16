// What the page says while it works and when something fails: the error banner (one for the
// page, in words, with the API's code) and each panel's own busy label, so that a long job in
// one panel never reads as work in another.

const $ = (id) => document.getElementById(id);

const TITLES = {
  invalid_image: "Not a picture the service can read.",
  unsupported_media_type: "Wrong file type.",
  image_too_large: "Picture too large.",
  request_too_large: "File too large.",
  memory_not_found: "Memory missing.",
  pattern_not_found: "Pattern missing.",
  memory_empty: "The memory is empty.",
  memory_exists: "Name taken.",
  unauthorized: "API key needed.",
  forbidden: "Not allowed with this key.",
  not_ready: "The service is still loading.",
  network: "No answer.",
  not_a_text_memory: "Not a text memory.",
  shape_mismatch: "Wrong picture size.",
  text_required: "Caption needed.",
  not_trained: "Not trained yet: train it, or wait for its training job.",
  job_running: "A job is running on this memory.",
  dataset_unavailable: "Demo data not installed.",
  wrong_kind: "Not for this kind of memory.",
  unknown_entity: "Unknown entity.",
  unknown_relation: "Unknown relation.",
  arity_mismatch: "Wrong number of arguments.",
  invalid_query: "Ask for exactly one argument.",
};

const listeners = [];

// Call fn(err) after each error is shown (the page reloads its memories on memory_not_found).
export function onError(fn) {
  listeners.push(fn);
}

export function showError(err) {
  const code = err.code || "error";
  $("error-title").textContent = TITLES[code] || "Error.";
  let message = err.message || String(err); // a validation_error's message names the fields itself
  if (code === "memory_not_found") message += " (deleted meanwhile? pick another memory)";
  $("error-message").textContent = message;
  $("error-code").textContent = err.status ? `${code} · HTTP ${err.status}` : code;
  $("error").hidden = false;
  if (code === "unauthorized" || code === "forbidden") $("key-form").hidden = false;
  for (const fn of listeners) fn(err);
}

export function clearError() {
  $("error").hidden = true;
}

// An action runner for one panel (the same one for each call with busyId):
// runner(label, fn) clears the banner, shows "label…" in that panel's busy label (element
// busyId) while fn runs, and sends fn's error to the banner; resolves to fn's result
// (undefined after an error). While actions overlap, the newest one's label shows.
const runners = new Map();

export function panelActions(busyId) {
  if (!runners.has(busyId)) runners.set(busyId, makeRunner(busyId));
  return runners.get(busyId);
}

function makeRunner(busyId) {
  const running = [];
  const show = () => {
    const label = running.at(-1) ?? "";
    $(busyId).textContent = label ? `${label}…` : "";
  };
  return async (label, fn) => {
    clearError();
    running.push(label);
    show();
    try {
      return await fn();
    } catch (err) {
      showError(err);
      return undefined;
    } finally {
      running.splice(running.lastIndexOf(label), 1);
      show();
    }
  };
}

// A button whose press runs run() and that stays disabled until it ends (a long job, such
// as loading a demo memory, is not started twice by a second press).
export function onPressOnce(button, run) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await run();
    } finally {
      button.disabled = false;
    }
  });
}

// A runner that also keeps the panel's data-state (busy, done, error) for its results.
export function panelRequests(panelId, busyId) {
  const act = panelActions(busyId);
  return async (label, fn) => {
    const panel = $(panelId);
    panel.dataset.state = "busy";
    let ok = false;
    await act(label, async () => {
      await fn();
      ok = true;
    });
    panel.dataset.state = ok ? "done" : "error";
    // On a phone the panel is screens below the button: bring its answer into view.
    if (ok && panel.getBoundingClientRect().top >= window.innerHeight) panel.scrollIntoView({ block: "start" });
  };
}
