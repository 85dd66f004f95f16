// The picture editor of panel 1: the picture with the pixels to fill tinted magenta, painted
// with a brush (hide / show) or set by a preset mask, and the noise slider. It owns
// state.original, state.mask and state.noiseSeed, and draws the Original and Cue canvases.

import { cueImage, maskImage, putImage } from "./pictures.js";
import { dims, state } from "./state.js";

const $ = (id) => document.getElementById(id);
const CANVASES = ["editor", "original", "cue", "result"];

// The canvases at the picked memory's size (CSS scales them up).
export function sizeCanvases() {
  const { h, w } = dims();
  for (const id of CANVASES) {
    const canvas = $(id);
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
  }
}

// A new picture (ImageData of the memory's size); `hidden` (Uint8Array, 1 = hidden) starts
// the mask, else every pixel is known. A new noise sample goes with it.
export function loadPicture(image, hidden = null) {
  sizeCanvases();
  state.original = image;
  state.mask = new Uint8Array(image.width * image.height).fill(1);
  if (hidden) hidden.forEach((v, i) => (state.mask[i] = v ? 0 : 1));
  state.noiseSeed = (Math.random() * 2 ** 32) >>> 0;
  putImage($("original"), image);
  renderEditor();
}

// No picture: the canvases blank, the noise back to 0.
export function clearPicture() {
  state.original = null;
  state.mask = null;
  $("noise").value = "0";
  $("noise-out").value = "0";
  $("mask-info").textContent = "";
  delete $("mask-info").dataset.hidden;
  for (const id of CANVASES) {
    const c = $(id);
    c.getContext("2d").clearRect(0, 0, c.width, c.height);
  }
}

// The cue as it is sent: the picture plus the slider's noise, hidden pixels transparent.
export function currentCue() {
  return cueImage(state.original, state.mask, Number($("noise").value), state.noiseSeed, dims().c);
}

export function currentMask() {
  const { h, w } = dims();
  return maskImage(state.mask, w, h);
}

export function hiddenCount() {
  return state.mask.reduce((n, v) => n + (v ? 0 : 1), 0);
}

// The editor: the picture with the pixels to fill tinted magenta; then the cue canvas.
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
  putImage($("editor"), view);
  putImage($("cue"), currentCue());
  const pct = ((100 * hidden) / (w * h)).toFixed(1);
  $("mask-info").textContent = `${hidden} of ${w * h} pixels to fill (${pct}%)`;
  $("mask-info").dataset.hidden = String(hidden);
}

// A preset mask: "bottom" half, centre "box", "random" 75% of the pixels, or "clear".
export function presetMask(kind) {
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
  const rect = $("editor").getBoundingClientRect();
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

// Wire the editor's controls: brush, noise, mask chips, painting.
export function setupEditor() {
  $("brush").addEventListener("input", (e) => ($("brush-out").value = e.target.value));
  $("noise").addEventListener("input", (e) => {
    $("noise-out").value = e.target.value;
    renderEditor();
  });
  for (const b of document.querySelectorAll("[data-mask]")) b.addEventListener("click", () => presetMask(b.dataset.mask));
  setupPainting();
}
