// The demo page: pick or preload a memory, take a picture (upload or stored), hide part
// of it (brush or preset mask, optional Gaussian noise), and ask the service to complete
// or retrieve it; follow jobs; look up pictures by caption in text memories.
//
// Plain ES module, nothing from the network. Pictures live at the memory's own size
// (W x H) in ImageData; the canvases are scaled up by CSS. What the service gets is
// exactly what the page shows: the cue as a PNG whose alpha 0 marks the hidden pixels,
// and the same mask as a mask picture (opaque white = known, transparent = to fill).
// The knowledge-base panel (relational memories) is kb.js.

import * as knowledge from "./kb.js";

const $ = (id) => document.getElementById(id);

const state = {
  info: null, // GET /v1/info
  presets: [], // GET /v1/demo
  memories: [], // GET /v1/memories
  memory: null, // the picked memory's details
  patternIds: [], // first page of the picked memory's pattern ids
  original: null, // ImageData (W x H), the picture
  mask: null, // Uint8Array(H*W): 1 = known, 0 = to fill
  upload: null, // the uploaded File, for "Store this upload"
  noiseSeed: 1,
  jobs: [], // GET /v1/jobs
  jobTimer: null,
  storedImages: new Map(), // "memory/id" -> ImageData of a stored pattern (for the verdict)
};

// --- the API --------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    Object.assign(this, { status, code, details });
  }
}

function apiKey() {
  return sessionStorage.getItem("ams-api-key") || "";
}

// One call; resolves to the JSON answer (null for 204), throws ApiError with the API's
// error shape ({"error": {"code", "message", "details"}}) or a made-up one for other failures.
async function api(method, path, body) {
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

const enc = encodeURIComponent;
const memPath = (suffix = "") => `/v1/memories/${enc(state.memory.name)}${suffix}`;

// --- errors and status ----------------------------------------------------------------

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
  not_trained: "Not trained yet: press Train.",
  job_running: "A job is running on this memory.",
  dataset_unavailable: "Demo data not installed.",
  wrong_kind: "Not for this kind of memory.",
  unknown_entity: "Unknown entity.",
  unknown_relation: "Unknown relation.",
  arity_mismatch: "Wrong number of arguments.",
  invalid_query: "Ask for exactly one argument.",
};

function showError(err) {
  const code = err.code || "error";
  $("error-title").textContent = TITLES[code] || "Error.";
  let message = err.message || String(err); // a validation_error's message names the fields itself
  if (code === "memory_not_found") message += " (deleted meanwhile? pick another memory)";
  $("error-message").textContent = message;
  $("error-code").textContent = err.status ? `${code} · HTTP ${err.status}` : code;
  $("error").hidden = false;
  if (code === "unauthorized" || code === "forbidden") $("key-form").hidden = false;
  if (code === "memory_not_found") loadMemories().catch(() => {});
}

function clearError() {
  $("error").hidden = true;
}

// Run an action with the busy line set; errors go to the banner.
async function act(label, fn) {
  clearError();
  $("busy").textContent = label ? `${label}…` : "";
  try {
    return await fn();
  } catch (err) {
    showError(err);
    return undefined;
  } finally {
    $("busy").textContent = "";
  }
}

// --- pictures -------------------------------------------------------------------------

const dims = () => {
  const [c, h, w] = state.memory.shape;
  return { c, h, w };
};
const isImageMemory = (m) => m && m.shape.length === 3;

// PIL's "L" conversion, so that a grey memory sees what the page shows.
const grey = (r, g, b) => (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;

// Draw a decoded picture centre-cropped and resized to the memory's size; returns
// {image: ImageData (opaque), hidden: Uint8Array of pixels that were transparent}.
function fitPicture(source, sw, sh) {
  const { c, h, w } = dims();
  const scale = Math.min(sw / w, sh / h);
  const cw = w * scale;
  const ch = h * scale;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, (sw - cw) / 2, (sh - ch) / 2, cw, ch, 0, 0, w, h);
  const image = ctx.getImageData(0, 0, w, h);
  const px = image.data;
  const hidden = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++) {
    if (px[4 * i + 3] < 128) hidden[i] = 1;
    if (c === 1) {
      const v = grey(px[4 * i], px[4 * i + 1], px[4 * i + 2]);
      px[4 * i] = px[4 * i + 1] = px[4 * i + 2] = v;
    }
    px[4 * i + 3] = 255;
  }
  return { image, hidden };
}

function decodeBase64Png(b64) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new ApiError(0, "invalid_image", "the service sent a picture the browser cannot show"));
    img.src = `data:image/png;base64,${b64}`;
  });
}

function putImage(canvasId, image) {
  const canvas = $(canvasId);
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(image, 0, 0);
}

function sizeCanvases() {
  const { h, w } = dims();
  for (const id of ["editor", "original", "cue", "result"]) {
    const canvas = $(id);
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
  }
}

// Seeded standard normal samples (mulberry32 + Box-Muller): the cue stays the same
// while the mask is painted, and changes with each new picture.
function normals(seed, n) {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(uniform(), 1e-12);
    const v = uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

// The cue: the original plus noise (one sample per pixel and channel; grey memories
// share it over R, G, B), hidden pixels transparent.
function cueImage() {
  const { c, h, w } = dims();
  const sigma = Number($("noise").value);
  const src = state.original.data;
  const cue = new ImageData(w, h);
  const out = cue.data;
  const noise = sigma > 0 ? normals(state.noiseSeed, w * h * c) : null;
  for (let i = 0; i < w * h; i++) {
    for (let ch = 0; ch < 3; ch++) {
      let v = src[4 * i + ch];
      if (noise) v += 255 * sigma * noise[c === 1 ? i : i * 3 + ch];
      out[4 * i + ch] = Math.max(0, Math.min(255, Math.round(v)));
    }
    out[4 * i + 3] = state.mask[i] ? 255 : 0;
  }
  return cue;
}

function maskImage() {
  const { h, w } = dims();
  const image = new ImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const v = state.mask[i] ? 255 : 0;
    image.data.set([v, v, v, v], 4 * i);
  }
  return image;
}

function pngBase64(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(image, 0, 0);
  return canvas.toDataURL("image/png").split(",")[1];
}

// The editor: the picture with the pixels to fill tinted magenta.
function renderEditor() {
  if (!state.original) return;
  const { h, w } = dims();
  const view = new ImageData(new Uint8ClampedArray(state.original.data), w, h);
  const px = view.data;
  let hidden = 0;
  for (let i = 0; i < w * h; i++) {
    if (state.mask[i]) continue;
    hidden++;
    px[4 * i] = Math.round(0.35 * px[4 * i] + 0.65 * 255);
    px[4 * i + 1] = Math.round(0.35 * px[4 * i + 1]);
    px[4 * i + 2] = Math.round(0.35 * px[4 * i + 2] + 0.65 * 255);
  }
  putImage("editor", view);
  putImage("cue", cueImage());
  const pct = ((100 * hidden) / (w * h)).toFixed(1);
  $("mask-info").textContent = `${hidden} of ${w * h} pixels to fill (${pct}%)`;
  $("mask-info").dataset.hidden = String(hidden);
}

function setPicture(image, hidden, info) {
  sizeCanvases();
  state.original = image;
  state.mask = new Uint8Array(image.width * image.height).fill(1);
  if (hidden) hidden.forEach((v, i) => (state.mask[i] = v ? 0 : 1));
  state.noiseSeed = (Math.random() * 2 ** 32) >>> 0;
  putImage("original", image);
  clearResult();
  $("intro").replaceChildren("Paint over the picture or pick a mask, then press ", Object.assign(document.createElement("b"), { textContent: "Complete" }), ".");
  $("picture-info").textContent = info;
  renderEditor();
}

// The result panel back to "nothing asked yet".
function clearResult() {
  const r = $("result");
  r.getContext("2d").clearRect(0, 0, r.width, r.height);
  $("result-title").textContent = "Answer";
  const summary = $("result-summary");
  summary.replaceChildren(Object.assign(document.createElement("p"), { className: "muted", textContent: "Press Complete or Retrieve." }));
  for (const key of ["mse", "best", "cue", "answer"]) delete summary.dataset[key];
  $("matches").replaceChildren();
  $("matches-title").hidden = true;
  $("captions").replaceChildren();
  $("captions-title").hidden = true;
  const panel = $("result-panel");
  if (panel.dataset.state !== "error") panel.dataset.state = "idle"; // an error stays until the next recall
}

// Everything that belonged to the previous memory: picture, mask, noise, results, lookups.
function resetWorkbench() {
  state.original = null;
  state.mask = null;
  state.upload = null;
  state.patternIds = []; // the previous memory's ids: never offered for the next one
  $("pattern-select").replaceChildren(new Option("(loading)", ""));
  $("noise").value = "0";
  $("noise-out").value = "0";
  $("mask-info").textContent = "";
  delete $("mask-info").dataset.hidden;
  $("store-row").hidden = true;
  $("store-id").value = "";
  $("store-text").value = "";
  $("lookup-results").replaceChildren();
  delete $("lookup-results").dataset.best;
  $("lookup-text").value = "";
  delete $("picture-info").dataset.pattern;
  $("picture-info").textContent = "No picture yet.";
  for (const id of ["editor", "original", "cue", "result"]) {
    const c = $(id);
    c.getContext("2d").clearRect(0, 0, c.width, c.height);
  }
  clearResult();
}

// --- masks ----------------------------------------------------------------------------

function presetMask(kind) {
  if (!state.original) return;
  const { h, w } = dims();
  const mask = new Uint8Array(w * h).fill(1);
  if (kind === "bottom") {
    mask.fill(0, Math.floor(h / 2) * w);
  } else if (kind === "box") {
    const [y0, x0] = [Math.floor(h / 4), Math.floor(w / 4)];
    for (let y = y0; y < y0 + Math.ceil(h / 2); y++) mask.fill(0, y * w + x0, y * w + x0 + Math.ceil(w / 2));
  } else if (kind === "random") {
    // Exactly 75% of the pixels, chosen by a Fisher-Yates shuffle.
    const order = Array.from({ length: w * h }, (_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (const i of order.slice(0, Math.round(0.75 * w * h))) mask[i] = 0;
  }
  state.mask = mask;
  renderEditor();
}

function paintAt(event) {
  const canvas = $("editor");
  const rect = canvas.getBoundingClientRect();
  const { h, w } = dims();
  const x = ((event.clientX - rect.left) / rect.width) * w;
  const y = ((event.clientY - rect.top) / rect.height) * h;
  const r = Number($("brush").value) / 2;
  const value = document.querySelector('input[name="tool"]:checked').value === "erase" ? 1 : 0;
  for (let py = Math.floor(y - r); py <= Math.ceil(y + r); py++) {
    for (let px = Math.floor(x - r); px <= Math.ceil(x + r); px++) {
      if (px < 0 || py < 0 || px >= w || py >= h) continue;
      const dx = px + 0.5 - x;
      const dy = py + 0.5 - y;
      if (dx * dx + dy * dy <= Math.max(r * r, 0.5)) state.mask[py * w + px] = value;
    }
  }
}

function setupPainting() {
  const canvas = $("editor");
  let down = false;
  canvas.addEventListener("pointerdown", (e) => {
    if (!state.original) return;
    down = true;
    canvas.setPointerCapture(e.pointerId);
    paintAt(e);
    renderEditor();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!down) return;
    for (const ev of e.getCoalescedEvents ? e.getCoalescedEvents() : [e]) paintAt(ev);
    renderEditor();
  });
  const stop = () => (down = false);
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
}

// --- memories -------------------------------------------------------------------------

function describe(m) {
  const shape = m.shape.join("×");
  const trained = m.state === "ready" ? "" : `, ${m.trained_count} trained`;
  if (m.kind === "relational") return `relational: ${m.count} facts, ${m.state}${trained}`;
  return `${m.kind}, shape ${shape}${m.text ? ", with captions" : ""}: ${m.count} patterns, ${m.state}${trained}`;
}

async function loadMemories(pick) {
  const { memories } = await api("GET", "/v1/memories");
  state.storedImages.clear(); // a pattern may have been deleted and stored again
  state.memories = memories;
  const select = $("memory-select");
  const current = pick ?? (state.memory && state.memory.name);
  select.replaceChildren(new Option(memories.length ? "(pick)" : "(none yet)", ""));
  for (const m of memories) select.add(new Option(`${m.name} (${m.count})`, m.name));
  const found = memories.find((m) => m.name === current);
  select.value = found ? found.name : "";
  await pickMemory(found || null, found && state.memory && found.name === state.memory.name);
  await knowledge.update(memories, state.presets);
}

// keep: the same memory again (a reload): keep the picture, refresh the details.
async function pickMemory(memory, keep = false) {
  const previous = state.memory;
  state.memory = memory;
  $("memory-select").value = memory ? memory.name : "";
  $("memory-details").textContent = memory ? describe(memory) : "No memory picked.";
  $("train-row").hidden = !memory || memory.state === "ready" || memory.state === "training";
  $("lookup-panel").hidden = !(memory && memory.text);
  $("caption").hidden = !(memory && memory.text);
  $("store-row").hidden = !(memory && state.upload);
  if (memory && memory.text) {
    $("lookup-hint").textContent = "Captions are stored with the pictures; try your own words.";
  }
  if (keep && previous && memory && previous.shape.join() === memory.shape.join()) return;
  resetWorkbench();
  if (!memory || !isImageMemory(memory)) $("pattern-select").replaceChildren(new Option("(no picture memory picked)", ""));
  if (!memory) return;
  if (memory.kind === "relational") {
    $("picture-info").textContent = "This memory stores facts: ask it in the knowledge-base panel.";
    await knowledge.pick(memory.name);
    return;
  }
  if (!isImageMemory(memory)) {
    $("picture-info").textContent = "This memory stores vectors; the picture tools need an image memory.";
    return;
  }
  sizeCanvases();
  await loadPatternIds();
  await loadSample();
}

// A sample to start from: the memory's first stored picture with its bottom half hidden,
// so that Complete is the one thing left to do.
async function loadSample() {
  if (!state.patternIds.length) {
    $("intro").textContent = "This memory is empty: upload a photo below and store it, or pick another memory.";
    return;
  }
  if (!(await pickPattern(state.patternIds[0]))) return; // the visitor picked another meanwhile
  presetMask("bottom");
  $("intro").replaceChildren("The bottom half is hidden. Press ", Object.assign(document.createElement("b"), { textContent: "Complete" }), " to have the memory fill it in, or paint your own mask.");
}

async function loadPatternIds() {
  const limit = Math.min(state.info ? state.info.limits.max_page : 100, 1000);
  const page = await api("GET", memPath(`/patterns?limit=${limit}`));
  state.patternIds = page.patterns.map((p) => p.id);
  const select = $("pattern-select");
  select.replaceChildren(new Option(state.patternIds.length ? "(pick)" : "(empty memory)", ""));
  for (const p of page.patterns) {
    const label = p.text ? `${p.id}: ${p.text.slice(0, 50)}` : p.metadata && p.metadata.label ? `${p.id} (${p.metadata.label})` : p.id;
    select.add(new Option(label, p.id));
  }
}

// Each new picture (a pick, an upload) takes a number; a slower, older one that arrives
// after it is dropped, so the last thing asked for is what is shown.
let pictureSeq = 0;

async function pickPattern(id) {
  const seq = ++pictureSeq;
  const p = await api("GET", memPath(`/patterns/${enc(id)}`));
  const img = await decodeBase64Png(p.image);
  if (seq !== pictureSeq) return false;
  const { image } = fitPicture(img, img.naturalWidth, img.naturalHeight);
  $("pattern-select").value = id;
  state.upload = null;
  $("store-row").hidden = true;
  setPicture(image, null, `Stored pattern ${id}${p.text ? `: “${p.text}”` : ""}`);
  $("picture-info").dataset.pattern = id;
  return true;
}

// --- upload ---------------------------------------------------------------------------

function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",")[1] || "");
    reader.onerror = () => reject(new ApiError(0, "read_error", `cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// The service checks the file first (type, size, pixels; the memory still there) by
// recalling from it, so its errors come in the API's words; then the browser decodes it.
async function uploadPicture(file) {
  const seq = ++pictureSeq;
  if (!state.memory) throw new ApiError(0, "no_memory", "pick a memory (or create a demo memory) first");
  if (!isImageMemory(state.memory)) throw new ApiError(0, "not_an_image_memory", "this memory stores vectors, not pictures");
  let nearest = "";
  try {
    const answer = await api("POST", memPath("/retrieve"), { image: await fileBase64(file), k: 1 });
    const m = answer.matches[0];
    // matches rank the stored patterns by their similarity to the memory's answer, not to
    // the upload: say so, or a photo of a cat reads as "nearest: dress (score 0)".
    if (m) nearest = ` The memory recalls it as ${m.id} (score ${fmtScore(m.score)}; 0 = exactly that stored pattern).`;
  } catch (err) {
    if (err.code !== "memory_empty" && err.code !== "not_trained") {
      err.message = `${file.name}: ${err.message}`;
      throw err;
    }
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    throw new ApiError(0, "invalid_image", `${file.name}: the service reads it, but this browser cannot show it`);
  }
  if (seq !== pictureSeq) return;
  const { image, hidden } = fitPicture(bitmap, bitmap.width, bitmap.height);
  state.upload = file;
  $("pattern-select").value = "";
  $("store-row").hidden = false;
  const { h, w } = dims();
  setPicture(image, hidden, `Upload ${file.name} (${bitmap.width}×${bitmap.height}, shown at ${w}×${h}).${nearest}`);
  delete $("picture-info").dataset.pattern;
}

async function storeUpload() {
  const form = new FormData();
  form.append("images", state.upload, state.upload.name);
  const id = $("store-id").value.trim();
  const text = $("store-text").value.trim();
  if (id) form.append("ids", id);
  if (text) form.append("texts", text);
  const answer = await api("POST", memPath("/patterns?fit=true"), form);
  await loadMemories(state.memory.name);
  $("pattern-select").value = answer.ids[0];
  $("picture-info").textContent += ` Stored as ${answer.ids[0]}.`;
}

// --- recall ---------------------------------------------------------------------------

const fmt = (x) => (x === null || x === undefined ? "—" : Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(2) : x.toFixed(3).replace(/\.?0+$/, "") || "0");
// A score within float32 rounding of 0 (the cue is that stored pattern) reads as 0, not -2.7e-10.
export const fmtScore = (x) => (typeof x === "number" && Math.abs(x) < 1e-6 ? "0" : fmt(x));

function needPicture() {
  if (!state.memory) throw new ApiError(0, "no_memory", "pick a memory first");
  if (!state.original) throw new ApiError(0, "no_picture", "upload a photo or pick a stored one first");
}

// MSE between two pictures of the memory's size, on [0, 1] pixels over the memory's
// channels; with `known` (1 = known), over the known pixels only.
function mse(a, b, known = null) {
  const { c, h, w } = dims();
  let sum = 0;
  let n = 0;
  for (let i = 0; i < w * h; i++) {
    if (known && !known[i]) continue;
    for (let ch = 0; ch < c; ch++) {
      const d = (a.data[4 * i + ch] - b.data[4 * i + ch]) / 255;
      sum += d * d;
    }
    n += c;
  }
  return n ? sum / n : 0;
}

// Below this MSE two 8-bit pictures are the same picture (a rounding step is 1/255).
const SAME = 1e-5;

// A stored pattern's picture at the memory's size (cached per memory and id).
async function storedImage(id) {
  const key = `${state.memory.name}/${id}`;
  if (!state.storedImages.has(key)) {
    const p = await api("GET", memPath(`/patterns/${enc(id)}`));
    const img = await decodeBase64Png(p.image);
    state.storedImages.set(key, fitPicture(img, img.naturalWidth, img.naturalHeight).image);
  }
  return state.storedImages.get(key);
}

function thumbUrl(image) {
  return `data:image/png;base64,${pngBase64(image)}`;
}

// Show an answer: the picture, then in words whether the cue was a stored pattern (its
// distance to the nearest of the matches, on the pixels it shows) and whether the answer
// is a stored pattern or the network's own reconstruction, then the matches.
async function showResult(title, b64, answer, sent, extra) {
  const img = await decodeBase64Png(b64);
  const { h, w } = dims();
  const ctx = $("result").getContext("2d", { willReadFrequently: true });
  ctx.clearRect(0, 0, w, h);
  ctx.drawImage(img, 0, 0, w, h);
  const result = ctx.getImageData(0, 0, w, h);
  $("result-title").textContent = title;
  const matches = [];
  for (const m of answer.matches) {
    try {
      matches.push({ ...m, image: await storedImage(m.id) });
    } catch (err) {
      if (err.code !== "pattern_not_found") throw err; // deleted meanwhile: leave it out
    }
  }
  const summary = $("result-summary");
  summary.replaceChildren();
  const line = (cls) => summary.appendChild(Object.assign(document.createElement("p"), { className: cls }));
  const bold = (text, cls = "") => Object.assign(document.createElement("b"), { textContent: text, className: cls });
  const visible = state.mask.reduce((n, v) => n + v, 0);
  if (matches.length) {
    const dists = matches.map((m) => mse(sent, m.image, state.mask));
    const near = dists.indexOf(Math.min(...dists));
    const cueStored = dists[near] <= SAME;
    const cue = line(`verdict ${cueStored ? "stored" : "new"}`);
    cue.id = "verdict-cue";
    if (cueStored) cue.append("Your cue is the stored pattern ", bold(matches[near].id), ` on its ${visible} visible pixels.`);
    else cue.append("Your cue is not a stored pattern: the nearest, ", bold(matches[near].id), `, differs by MSE ${fmt(dists[near])} on the ${visible} visible pixels.`);
    const best = matches[0];
    const gap = mse(result, best.image);
    const report = answer.recall; // kind pc: what the recall did, in the service's words
    const isStored = report ? report.stored : gap <= SAME;
    const ans = line(`verdict ${isStored ? "stored" : "new"}`);
    ans.id = "verdict-answer";
    if (report) reportVerdict(ans, report, bold, answer.trained_count);
    else if (isStored) ans.append("The answer is the stored pattern ", bold(best.id, "best-id"), ".");
    else ans.append("The answer is the network's reconstruction, not a stored pattern: MSE ", fmt(gap), " from the nearest stored pattern, ", bold(best.id, "best-id"), ".");
    const named = report ? report.nearest.id : best.id;
    Object.assign(summary.dataset, { best: named, cue: cueStored ? "stored" : "new", cueMse: String(dists[near]), answer: isStored ? "stored" : "reconstruction", answerMse: String(report ? report.nearest.mse : gap) });
  }
  const toOriginal = mse(result, state.original);
  const facts = [`energy ${fmt(answer.energy)}`, `MSE to the original ${fmt(toOriginal)}`];
  if (extra) facts.push(extra);
  if (answer.state !== "ready") facts.push(`the memory is ${answer.state} (${answer.trained_count} trained)`);
  line("muted small").textContent = facts.join(" · ");
  summary.dataset.mse = String(toOriginal);
  const list = $("matches");
  list.replaceChildren();
  $("matches-title").hidden = !matches.length;
  for (const m of matches) {
    const li = document.createElement("li");
    li.dataset.id = m.id;
    li.append(Object.assign(new Image(), { src: thumbUrl(m.image), alt: m.id }), `${m.id} (${fmtScore(m.score)})`);
    list.append(li);
  }
}

// A pc memory's answer is always the network's own prediction; its recall report says
// whether that is the reconstruction of a stored pattern (the memory index landed on it).
function reportVerdict(line, report, bold, trained) {
  const { id, mse: gap } = report.nearest;
  const off = gap === null ? " (deleted since training)" : ` (MSE ${fmt(gap)})`;
  if (report.stored) {
    line.append("The answer is the network's reconstruction of the stored pattern ", bold(id, "best-id"), `${off}.`);
    if (!report.unique) line.append(" Other stored patterns explain your cue about as well.");
  } else if (report.index) {
    line.append(`The answer is the network's reconstruction of something it has not stored: your cue matches none of the ${trained} patterns it was trained on (nearest `, bold(id, "best-id"), `${off}).`);
  } else {
    line.append("The answer is the network's reconstruction (this memory recalls without its index): nearest stored pattern ", bold(id, "best-id"), `${off}.`);
  }
}

function hiddenCount() {
  return state.mask.reduce((n, v) => n + (v ? 0 : 1), 0);
}

async function complete() {
  needPicture();
  const sent = cueImage();
  const body = { image: pngBase64(sent), mask: pngBase64(maskImage()), k: 5 };
  const answer = await api("POST", memPath("/complete"), body);
  await showResult("Completion", answer.image, answer, sent, `${answer.unknown_pixels} pixels filled`);
}

async function retrieve() {
  needPicture();
  const sent = cueImage();
  const body = { image: pngBase64(sent), k: 5 };
  if (hiddenCount()) body.mask = pngBase64(maskImage());
  const answer = await api("POST", memPath("/retrieve"), body);
  await showResult("Retrieved", answer.pattern.image, answer, sent);
}

async function captionCue() {
  needPicture();
  const body = { image: pngBase64(cueImage()), k: 5 };
  if (hiddenCount()) body.mask = pngBase64(maskImage());
  const answer = await api("POST", memPath("/lookup"), body);
  const list = $("captions");
  list.replaceChildren();
  $("captions-title").hidden = false;
  for (const c of answer.captions) {
    const li = document.createElement("li");
    li.textContent = `“${c.text}” (${c.id}, score ${fmt(c.score)})`;
    list.append(li);
  }
}

async function lookupText(text, k) {
  if (!text.trim()) throw new ApiError(0, "empty_text", "type a caption first");
  const answer = await api("POST", memPath("/lookup"), { text, k });
  const out = $("lookup-results");
  out.replaceChildren();
  const card = (b64, title, sub, id) => {
    const fig = document.createElement("figure");
    fig.className = "card";
    if (b64) {
      const img = new Image();
      img.src = `data:image/png;base64,${b64}`;
      img.alt = title;
      fig.append(img);
    }
    const cap = document.createElement("figcaption");
    const strong = document.createElement("strong");
    strong.textContent = title;
    cap.append(strong, document.createElement("br"), sub);
    fig.append(cap);
    if (id) {
      fig.dataset.id = id;
      if (b64 && isImageMemory(state.memory)) {
        fig.title = "use this picture";
        fig.addEventListener("click", () => act("Loading", () => pickPattern(id)));
      }
    }
    return fig;
  };
  // The memory's own completion of the picture part, then the stored pairs whose captions fit best.
  const completion = answer.completion && answer.completion.image;
  if (completion) out.append(card(completion, "completion", `energy ${fmt(answer.energy)}`));
  for (const p of answer.patterns || []) out.append(card(p.image, `${p.id} (${fmtScore(p.score)})`, p.text || "", p.id));
  out.dataset.best = answer.patterns && answer.patterns.length ? answer.patterns[0].id : "";
}

// --- demo memories and jobs -----------------------------------------------------------

async function loadPresets() {
  const { presets } = await api("GET", "/v1/demo");
  state.presets = presets;
  const select = $("preset-select");
  select.replaceChildren();
  for (const p of presets.filter((x) => x.kind !== "relational")) select.add(new Option(`${p.title} (${p.default_count})`, p.name));
  showPreset();
}

function showPreset() {
  const p = state.presets.find((x) => x.name === $("preset-select").value);
  $("preset-description").textContent = p ? `${p.description}. Memory “${p.memory_name}”, shape ${p.shape.join("×")}.` : "";
}

async function createDemo() {
  const preset = state.presets.find((x) => x.name === $("preset-select").value);
  if (!preset) throw new ApiError(0, "no_preset", "no demo data to load");
  const kind = $("kind-select").value || "hopfield";
  const name = kind === "hopfield" ? preset.memory_name : `${preset.memory_name}-${kind}`;
  let started;
  try {
    started = await api("POST", "/v1/demo", { preset: preset.name, name, kind });
  } catch (err) {
    if (err.code !== "memory_exists") throw err;
    await loadMemories(name);
    $("demo-progress").hidden = false;
    $("demo-bar").value = 1;
    $("demo-status").textContent = `${name} exists already: picked it.`;
    return;
  }
  $("demo-progress").hidden = false;
  $("demo-status").textContent = "loading…";
  const job = await followJob(started.job.id, (j) => {
    $("demo-bar").value = j.progress;
    $("demo-status").textContent = `${j.status}: ${Math.round(100 * j.progress)}% of ${j.patterns} patterns${eta(j)}`;
  });
  if (job.status !== "succeeded") {
    throw new ApiError(0, `job_${job.status}`, `loading ${name} ${job.status}${job.error ? `: ${job.error}` : ""}`);
  }
  $("demo-status").textContent = `${name}: ${job.patterns} patterns loaded.`;
  await loadMemories(name);
  if (state.memory && state.memory.state === "untrained") await train(); // e.g. kind pc
}

async function train() {
  const epochs = Number($("train-epochs").value);
  const body = epochs > 0 ? { epochs } : {};
  const job = await api("POST", memPath("/train"), body);
  pollJobs();
  return job;
}

const eta = (j) => (j.eta_seconds === null || j.eta_seconds === undefined || j.status !== "running" ? "" : `, ${duration(j.eta_seconds)} left`);

// Poll one job until it ends; onUpdate(job) each time; resolves to the final job.
async function followJob(id, onUpdate) {
  for (;;) {
    const job = await api("GET", `/v1/jobs/${enc(id)}`);
    onUpdate(job);
    renderJobs(mergeJob(job));
    if (FINISHED.includes(job.status)) return job;
    await new Promise((r) => setTimeout(r, 200));
  }
}

function mergeJob(job) {
  const i = state.jobs.findIndex((j) => j.id === job.id);
  if (i >= 0) state.jobs[i] = job;
  else state.jobs.push(job);
  return state.jobs;
}

const FINISHED = ["succeeded", "failed", "cancelled"];

// 42 -> "42 s", 886 -> "15 min", 7300 -> "2.0 h".
const duration = (sec) => (sec < 90 ? `${Math.round(sec)} s` : sec < 5400 ? `${Math.round(sec / 60)} min` : `${(sec / 3600).toFixed(1)} h`);

// Why a finished job ended, in words (stop_reason from /v1/jobs).
function jobOutcome(j) {
  const unit = j.kind === "demo" ? "step" : "epoch";
  const of = `${j.epoch} of ${j.epochs ?? "?"}`;
  switch (j.stop_reason) {
    case "epochs":
      return `Finished: trained all ${j.epochs} epochs.`;
    case "energy":
      return `Finished early at epoch ${of}: the energy fell to the model's stop energy.`;
    case "done": {
      const memory = state.memories.find((m) => m.name === j.memory);
      return `Finished: ${j.patterns} ${memory && memory.kind === "relational" ? "facts" : "patterns"} loaded.`;
    }
    case "cancelled":
      return `Cancelled at ${unit} ${of}.`;
    case "failed":
      return `Failed: ${j.error || "see the service's log"}.`;
    default:
      return j.status === "queued" ? "Waiting for a free job slot." : "";
  }
}

// Jobs as cards (newest first): status, progress, epoch, energy, ETA, why it ended, and a
// Cancel button that a phone reaches without scrolling sideways. A job's card is made once
// and updated in place, so that polling never replaces a button under a finger.
function renderJobs(jobs) {
  const list = $("jobs");
  const shown = [...jobs].reverse().slice(0, 10);
  const keep = new Set(shown.map((j) => j.id));
  for (const li of [...list.children]) if (!keep.has(li.dataset.job)) li.remove();
  if (!shown.length) {
    list.append(Object.assign(document.createElement("li"), { className: "empty muted small", textContent: "No jobs." }));
    return;
  }
  shown.forEach((j, i) => {
    let li = list.querySelector(`li[data-job="${CSS.escape(j.id)}"]`) || jobCard(j);
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    updateJobCard(li, j);
  });
}

function jobCard(j) {
  const li = document.createElement("li");
  li.className = "job";
  li.dataset.job = j.id;
  li.innerHTML = `<div class="job-head"><span class="job-name"></span><span class="badge"></span><span class="muted job-kind"></span></div>
    <progress max="1" value="0"></progress>
    <div class="job-line"><span class="job-progress"></span><span class="job-epoch"></span><span class="job-energy"></span><span class="job-eta"></span></div>
    <span class="job-reason"></span>
    <button type="button" class="cancel">Cancel</button>`;
  li.querySelector(".job-name").textContent = j.memory;
  li.querySelector(".job-kind").textContent = j.kind === "demo" ? "demo load" : "training";
  li.querySelector(".cancel").addEventListener("click", () => act("Cancelling", () => api("DELETE", `/v1/jobs/${enc(j.id)}`).then(pollJobs)));
  return li;
}

function updateJobCard(li, j) {
  const set = (sel, text) => {
    const el = li.querySelector(sel);
    if (el.textContent !== text) el.textContent = text;
    el.hidden = !text;
  };
  li.dataset.status = j.status;
  li.dataset.reason = j.stop_reason || "";
  set(".badge", j.status);
  li.querySelector("progress").value = j.progress;
  set(".job-progress", `${Math.round(100 * j.progress)}%`);
  set(".job-epoch", `${j.kind === "demo" ? "step" : "epoch"} ${j.epoch}/${j.epochs ?? "?"}`);
  set(".job-energy", j.energy === null || j.energy === undefined ? "" : `energy ${fmt(j.energy)}`);
  set(".job-eta", j.status === "running" && j.eta_seconds !== null ? `${duration(j.eta_seconds)} left` : "");
  set(".job-reason", jobOutcome(j));
  li.querySelector(".cancel").hidden = FINISHED.includes(j.status);
}

// Refresh the jobs table; keep polling while any job is unfinished, then refresh the memory.
async function pollJobs() {
  clearTimeout(state.jobTimer);
  let jobs;
  try {
    ({ jobs } = await api("GET", "/v1/jobs"));
  } catch (err) {
    showError(err);
    return;
  }
  const wasRunning = state.jobs.some((j) => !FINISHED.includes(j.status));
  state.jobs = jobs;
  renderJobs(jobs);
  const running = jobs.some((j) => !FINISHED.includes(j.status));
  if (running) state.jobTimer = setTimeout(pollJobs, 500);
  if (wasRunning && !running && state.memory) loadMemories().catch(showError);
}

// --- start ----------------------------------------------------------------------------

async function start() {
  try {
    state.info = await api("GET", "/v1/info");
  } catch (err) {
    $("service-info").textContent = "not connected";
    showError(err);
    return;
  }
  const i = state.info;
  $("service-info").textContent = `v${i.version} on ${i.device}${i.auth ? ", API key on" : ""}`;
  $("key-form").hidden = !i.auth;
  const kinds = $("kind-select");
  kinds.replaceChildren();
  for (const k of i.kinds.filter((x) => x !== "relational")) kinds.add(new Option(k, k)); // facts: kb.js
  await act("", async () => {
    await loadPresets();
    await loadMemories();
    await pollJobs();
    await landOnAMemory();
  });
  document.body.dataset.ready = "true";
}

function bind() {
  $("error-close").addEventListener("click", clearError);
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("ams-api-key", $("api-key").value.trim());
    clearError();
    start();
  });
  $("memory-select").addEventListener("change", (e) =>
    act("Loading", () => pickMemory(state.memories.find((m) => m.name === e.target.value) || null)),
  );
  $("memory-refresh").addEventListener("click", () => act("Loading", () => loadMemories()));
  $("pattern-select").addEventListener("change", (e) => e.target.value && act("Loading", () => pickPattern(e.target.value)));
  $("pattern-random").addEventListener("click", () =>
    act("Loading", async () => {
      needMemoryWithPatterns();
      await pickPattern(state.patternIds[Math.floor(Math.random() * state.patternIds.length)]);
    }),
  );
  $("upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) act("Checking the picture", () => uploadPicture(file));
    e.target.value = ""; // the same file again is a new upload
  });
  $("store").addEventListener("click", () => act("Storing", storeUpload));
  $("brush").addEventListener("input", (e) => ($("brush-out").value = e.target.value));
  $("noise").addEventListener("input", (e) => {
    $("noise-out").value = e.target.value;
    renderEditor();
  });
  for (const b of document.querySelectorAll("[data-mask]")) b.addEventListener("click", () => presetMask(b.dataset.mask));
  $("complete").addEventListener("click", () => run("Completing", complete));
  $("retrieve").addEventListener("click", () => run("Retrieving", retrieve));
  $("caption").addEventListener("click", () => run("Looking up captions", captionCue));
  $("lookup-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run("Looking up", () => lookupText($("lookup-text").value, Number($("lookup-k").value) || 5));
  });
  $("preset-select").addEventListener("change", showPreset);
  $("demo-load").addEventListener("click", async (e) => {
    e.target.disabled = true;
    await act("Creating the demo memory", createDemo);
    e.target.disabled = false;
  });
  $("train").addEventListener("click", () => act("Starting training", train));
  setupPainting();
  knowledge.setup({ api, act, ApiError, followJob, loadMemories, maxPage: () => (state.info ? state.info.limits.max_page : 100) });
}

// A visitor who lands gets a memory with a sample picture ready: the demo memory if there is
// one, else the first picture memory with patterns; on an empty service the Fashion-MNIST
// demo memory is created (its load takes a few seconds).
async function landOnAMemory() {
  if (state.memory) return;
  const images = state.memories.filter((m) => isImageMemory(m) && m.count > 0);
  const chosen = images.find((m) => m.name.startsWith("demo-")) || images[0];
  if (chosen) {
    await pickMemory(chosen);
  } else if (!state.memories.length && state.presets.some((p) => p.name === "fashion")) {
    $("preset-select").value = "fashion";
    showPreset();
    $("intro").textContent = "Loading a demo memory of 500 Fashion-MNIST pictures…";
    await createDemo();
  }
}

function needMemoryWithPatterns() {
  if (!state.memory) throw new ApiError(0, "no_memory", "pick a memory first");
  if (!state.patternIds.length) throw new ApiError(0, "memory_empty", "this memory has no patterns yet");
}

// A recall, with the result panel's data-state saying where it is (idle, busy, done, error).
async function run(label, fn) {
  const panel = $("result-panel");
  panel.dataset.state = "busy";
  let ok = false;
  await act(label, async () => {
    await fn();
    ok = true;
  });
  panel.dataset.state = ok ? "done" : "error";
}

bind();
start();
