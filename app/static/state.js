// The page's shared state: what the service said (info, presets, memories), the picked
// memory, and the picture being edited. Writers: memories.js (memories, memory, patternIds),
// patterns.js (upload), editor.js (original, mask, noiseSeed), demo.js (info), presets.js
// (presets). Everything else a module keeps to itself.

import { enc } from "./api.js";

export const state = {
  info: null, // GET /v1/info
  presets: [], // GET /v1/demo
  memories: [], // GET /v1/memories
  memory: null, // the picked memory's details
  patternIds: [], // first page of the picked memory's pattern ids
  original: null, // ImageData (W x H), the picture
  mask: null, // Uint8Array(H*W): 1 = known, 0 = to fill
  upload: null, // the uploaded File, for "Store this upload"
  noiseSeed: 1,
};

// The picked memory's picture size: channels, height, width.
export const dims = () => {
  const [c, h, w] = state.memory.shape;
  return { c, h, w };
};

export const isImageMemory = (m) => m && m.shape.length === 3;

// The largest page the service hands out (GET /v1/info), at most 1000.
export const maxPage = () => Math.min(state.info ? state.info.limits.max_page : 100, 1000);

// "/v1/memories/<picked memory><suffix>".
export const memPath = (suffix = "") => `/v1/memories/${enc(state.memory.name)}${suffix}`;
