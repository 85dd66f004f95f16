// Where panel 1's picture comes from: a stored pattern of the picked memory (the list, a
// pick, the sample the page starts with) or the visitor's own photo (checked by the
// service, then optionally stored). Each new picture takes a number, so that a slower,
// older one arriving after it is dropped: the last thing asked for is what is shown.

import { ApiError, api, enc } from "./api.js";
import { fmtScore } from "./format.js";
import { clearPicture, loadPicture, presetMask } from "./editor.js";
import { decodeBase64Png, fileBase64, fitPicture } from "./pictures.js";
import { clearResult } from "./result.js";
import { dims, isImageMemory, maxPage, memPath, state } from "./state.js";

const $ = (id) => document.getElementById(id);
let pictureSeq = 0;

const completeHint = (before, after) =>
  $("intro").replaceChildren(before, Object.assign(document.createElement("b"), { textContent: "Complete" }), after);

function setPicture(image, hidden, info) {
  loadPicture(image, hidden);
  clearResult();
  completeHint("Paint over the picture or pick a mask, then press ", ".");
  $("picture-info").textContent = info;
}

// No picture and no pattern list (another memory is being picked).
export function clearPictureSource() {
  clearPicture();
  state.upload = null;
  state.patternIds = []; // the previous memory's ids: never offered for the next one
  $("pattern-select").replaceChildren(new Option("(loading)", ""));
  $("store-row").hidden = true;
  $("store-id").value = "";
  $("store-text").value = "";
  delete $("picture-info").dataset.pattern;
  $("picture-info").textContent = "No picture yet.";
}

export async function loadPatternIds() {
  const page = await api("GET", memPath(`/patterns?limit=${maxPage()}`));
  state.patternIds = page.patterns.map((p) => p.id);
  const select = $("pattern-select");
  select.replaceChildren(new Option(state.patternIds.length ? "(pick)" : "(empty memory)", ""));
  for (const p of page.patterns) {
    const label = p.text ? `${p.id}: ${p.text.slice(0, 50)}` : p.metadata && p.metadata.label ? `${p.id} (${p.metadata.label})` : p.id;
    select.add(new Option(label, p.id));
  }
}

// A sample to start from: the memory's first stored picture with its bottom half hidden,
// so that Complete is the one thing left to do.
export async function loadSample() {
  if (!state.patternIds.length) {
    $("intro").textContent = "This memory is empty: upload a photo below and store it, or pick another memory.";
    return;
  }
  if (!(await pickPattern(state.patternIds[0]))) return; // the visitor picked another meanwhile
  presetMask("bottom");
  completeHint("The bottom half is hidden. Press ", " to have the memory fill it in, or paint your own mask.");
}

// Make the stored pattern `id` the picture; false if a newer picture was asked for meanwhile.
export async function pickPattern(id) {
  const seq = ++pictureSeq;
  const p = await api("GET", memPath(`/patterns/${enc(id)}`));
  const img = await decodeBase64Png(p.image);
  if (seq !== pictureSeq) return false;
  const { image } = fitPicture(img, img.naturalWidth, img.naturalHeight, dims());
  $("pattern-select").value = id;
  state.upload = null;
  $("store-row").hidden = true;
  setPicture(image, null, `Stored pattern ${id}${p.text ? `: “${p.text}”` : ""}`);
  $("picture-info").dataset.pattern = id;
  return true;
}

export async function pickRandomPattern() {
  if (!state.memory) throw new ApiError(0, "no_memory", "pick a memory first");
  if (!state.patternIds.length) throw new ApiError(0, "memory_empty", "this memory has no patterns yet");
  await pickPattern(state.patternIds[Math.floor(Math.random() * state.patternIds.length)]);
}

// The service checks the file first (type, size, pixels; the memory still there) by
// recalling from it, so its errors come in the API's words; then the browser decodes it.
export async function uploadPicture(file) {
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
  const { h, w } = dims();
  const { image, hidden } = fitPicture(bitmap, bitmap.width, bitmap.height, dims());
  state.upload = file;
  $("pattern-select").value = "";
  $("store-row").hidden = false;
  setPicture(image, hidden, `Upload ${file.name} (${bitmap.width}×${bitmap.height}, shown at ${w}×${h}).${nearest}`);
  delete $("picture-info").dataset.pattern;
}

// Store the uploaded photo (with the id and caption typed, if any) in the picked memory;
// reload(name) refreshes the page's memories after it. Resolves to the new id.
export async function storeUpload(reload) {
  const form = new FormData();
  form.append("images", state.upload, state.upload.name);
  const id = $("store-id").value.trim();
  const text = $("store-text").value.trim();
  if (id) form.append("ids", id);
  if (text) form.append("texts", text);
  const answer = await api("POST", memPath("/patterns?fit=true"), form);
  await reload(state.memory.name);
  $("pattern-select").value = answer.ids[0];
  $("picture-info").textContent += ` Stored as ${answer.ids[0]}.`;
  return answer.ids[0];
}
