// The demo page: pick or preload a memory, take a picture (upload or stored), hide part
// of it (brush or preset mask, optional Gaussian noise), and ask the service to complete
// or retrieve it; follow jobs; look up pictures by caption in text memories; ask a
// knowledge base. This module starts the page and wires each control to its module:
//
//   api.js       the REST calls and ApiError          feedback.js  error banner, busy labels
//   state.js     the shared page state                format.js    numbers and durations
//   pictures.js  decode, fit, cue, mask, PNG, MSE      editor.js    canvas, brush, masks, noise
//   patterns.js  stored patterns, uploads             recall.js    Complete, Retrieve, Caption
//   result.js    the answer panel and its verdict      lookup.js    find pictures by caption
//   memories.js  the memory picker                    jobs.js      jobs: follow, poll, cancel
//   presets.js   demo memories, Train                 kb.js        the knowledge-base panel
//
// Plain ES modules, nothing from the network. Pictures live at the memory's own size
// (W x H) in ImageData; the canvases are scaled up by CSS. What the service gets is
// exactly what the page shows: the cue as a PNG whose alpha 0 marks the hidden pixels,
// and the same mask as a mask picture (opaque white = known, transparent = to fill).
// Each panel has its own busy label (feedback.panelActions), so work in one never shows in another.

import { api, setApiKey } from "./api.js";
import { setupEditor } from "./editor.js";
import { clearError, onError, onPressOnce, panelActions, panelRequests, showError } from "./feedback.js";
import { followJob, pollJobs } from "./jobs.js";
import * as knowledge from "./kb.js";
import { lookupText } from "./lookup.js";
import { loadMemories, pickMemory } from "./memories.js";
import { pickPattern, pickRandomPattern, storeUpload, uploadPicture } from "./patterns.js";
import { createDemo, loadPresets, showPreset, train } from "./presets.js";
import { captionCue, complete, retrieve } from "./recall.js";
import { isImageMemory, state } from "./state.js";

export { fmtScore } from "./format.js";

const $ = (id) => document.getElementById(id);

const picture = panelActions("busy"); // panel 1: the memory and picture pickers, the editor
const recall = panelRequests("result-panel", "busy"); // panel 1's recall buttons, panel 2's state
const memoryPanel = panelActions("memory-busy"); // panel 3: reload, demo memories, training
const lookup = panelRequests("lookup-panel", "lookup-busy");

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
  await picture("", async () => {
    await loadPresets();
    await loadMemories();
    await pollJobs();
    await landOnAMemory();
  });
  document.body.dataset.ready = "true";
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

function bindPicturePanel() {
  $("memory-select").addEventListener("change", (e) =>
    picture("Loading", () => pickMemory(state.memories.find((m) => m.name === e.target.value) || null)),
  );
  $("pattern-select").addEventListener("change", (e) => e.target.value && picture("Loading", () => pickPattern(e.target.value)));
  $("pattern-random").addEventListener("click", () => picture("Loading", pickRandomPattern));
  $("upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) picture("Checking the picture", () => uploadPicture(file));
    e.target.value = ""; // the same file again is a new upload
  });
  $("store").addEventListener("click", () => picture("Storing", () => storeUpload(loadMemories)));
  setupEditor();
  $("complete").addEventListener("click", () => recall("Completing", complete));
  $("retrieve").addEventListener("click", () => recall("Retrieving", retrieve));
  $("caption").addEventListener("click", () => recall("Looking up captions", captionCue));
}

function bind() {
  $("error-close").addEventListener("click", clearError);
  onError((err) => err.code === "memory_not_found" && loadMemories().catch(() => {}));
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setApiKey($("api-key").value.trim());
    clearError();
    start();
  });
  bindPicturePanel();
  $("lookup-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const onPick = isImageMemory(state.memory) ? (id) => picture("Loading", () => pickPattern(id)) : null;
    lookup("Looking up", () => lookupText($("lookup-text").value, Number($("lookup-k").value) || 5, onPick));
  });
  $("memory-refresh").addEventListener("click", () => memoryPanel("Loading", () => loadMemories()));
  $("preset-select").addEventListener("change", showPreset);
  onPressOnce($("demo-load"), () => memoryPanel("Creating the demo memory", createDemo));
  $("train").addEventListener("click", () => memoryPanel("Starting training", train));
  knowledge.setup({ followJob, loadMemories });
}

bind();
start();
