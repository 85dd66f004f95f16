// Pictures as the page handles them, with no page state: decode (PNG from the API, files),
// fit to a memory's size, cue and mask pictures, PNG encoding, seeded noise and MSE.
// A picture is an ImageData of the memory's size (W x H); a mask is a Uint8Array(H*W),
// 1 = known, 0 = to fill; {c, h, w} is the memory's shape.

import { ApiError } from "./api.js";

// PIL's "L" conversion, so that a grey memory sees what the page shows.
const grey = (r, g, b) => (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;

// Draw a decoded picture (sw x sh) centre-cropped and resized to {c, h, w}; returns
// {image: ImageData (opaque), hidden: Uint8Array of pixels that were transparent}.
export function fitPicture(source, sw, sh, { c, h, w }) {
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

export function decodeBase64Png(b64) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new ApiError(0, "invalid_image", "the service sent a picture the browser cannot show"));
    img.src = `data:image/png;base64,${b64}`;
  });
}

// A PNG from the API (base64), fitted to {c, h, w}: an ImageData.
export async function fitBase64Png(b64, shape) {
  const img = await decodeBase64Png(b64);
  return fitPicture(img, img.naturalWidth, img.naturalHeight, shape).image;
}

export function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",")[1] || "");
    reader.onerror = () => reject(new ApiError(0, "read_error", `cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

export function pngBase64(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(image, 0, 0);
  return canvas.toDataURL("image/png").split(",")[1];
}

// Show an ImageData on a canvas at its own size (CSS scales it up).
export function putImage(canvas, image) {
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(image, 0, 0);
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

// The cue: the original plus Gaussian noise of std sigma (on [0, 1] pixels; one sample per
// pixel and channel, grey memories share it over R, G, B), hidden pixels transparent.
export function cueImage(original, mask, sigma, seed, c) {
  const { width: w, height: h } = original;
  const src = original.data;
  const cue = new ImageData(w, h);
  const out = cue.data;
  const noise = sigma > 0 ? normals(seed, w * h * c) : null;
  for (let i = 0; i < w * h; i++) {
    for (let ch = 0; ch < 3; ch++) {
      let v = src[4 * i + ch];
      if (noise) v += 255 * sigma * noise[c === 1 ? i : i * 3 + ch];
      out[4 * i + ch] = Math.max(0, Math.min(255, Math.round(v)));
    }
    out[4 * i + 3] = mask[i] ? 255 : 0;
  }
  return cue;
}

// The mask as the API takes it: opaque white = known, transparent = to fill.
export function maskImage(mask, w, h) {
  const image = new ImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const v = mask[i] ? 255 : 0;
    image.data.set([v, v, v, v], 4 * i);
  }
  return image;
}

// MSE between two pictures of one size, on [0, 1] pixels over the first c channels; with
// `known` (1 = known), over the known pixels only.
export function mse(a, b, c, known = null) {
  const n = a.width * a.height;
  let sum = 0;
  let count = 0;
  for (let i = 0; i < n; i++) {
    if (known && !known[i]) continue;
    for (let ch = 0; ch < c; ch++) {
      const d = (a.data[4 * i + ch] - b.data[4 * i + ch]) / 255;
      sum += d * d;
    }
    count += c;
  }
  return count ? sum / count : 0;
}
