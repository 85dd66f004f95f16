// The memory picker: the service's memories in panel 1's select, the picked one's details
// in panel 3, and what picking one does (the picture tools reset, its first picture loaded
// as a sample; a knowledge base is handed to the knowledge-base panel).

import { api } from "./api.js";
import { sizeCanvases } from "./editor.js";
import * as knowledge from "./kb.js";
import { clearLookup } from "./lookup.js";
import { clearPictureSource, loadPatternIds, loadSample } from "./patterns.js";
import { clearResult, forgetStoredImages } from "./result.js";
import { isImageMemory, state } from "./state.js";

const $ = (id) => document.getElementById(id);

function describe(m) {
  const shape = m.shape.join("×");
  const trained = m.state === "ready" ? "" : `, ${m.trained_count} trained`;
  if (m.kind === "relational") return `relational: ${m.count} facts, ${m.state}${trained}`;
  return `${m.kind}, shape ${shape}${m.text ? ", with captions" : ""}: ${m.count} patterns, ${m.state}${trained}`;
}

// A memory that recalls through a trained network (kind pc) but has none yet says so beside
// Complete: pressing it would only get "not trained".
function showModelHint(memory) {
  const hint = $("model-hint");
  const noModel = memory && memory.kind !== "relational" && (memory.state === "untrained" || (memory.state === "training" && memory.trained_count === 0));
  hint.hidden = !noModel;
  if (!noModel) return;
  hint.textContent =
    memory.state === "training"
      ? "This memory is training its network (see Jobs): Complete and Retrieve answer once the job is done."
      : "This memory recalls through a network it has not trained yet: press Train (Memory and jobs), then Complete.";
}

// Reload the list; pick `pick` (a name), else keep the picked memory if it is still there.
export async function loadMemories(pick) {
  const { memories } = await api("GET", "/v1/memories");
  forgetStoredImages(); // a pattern may have been deleted and stored again
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

// Pick a memory (null: none). keep: the same memory again (a reload): keep the picture,
// refresh the details.
export async function pickMemory(memory, keep = false) {
  const previous = state.memory;
  state.memory = memory;
  $("memory-select").value = memory ? memory.name : "";
  $("memory-details").textContent = memory ? describe(memory) : "No memory picked.";
  $("train-row").hidden = !memory || memory.state === "ready" || memory.state === "training";
  $("lookup-panel").hidden = !(memory && memory.text);
  $("caption").hidden = !(memory && memory.text);
  $("store-row").hidden = !(memory && state.upload);
  showModelHint(memory);
  if (memory && memory.text) {
    $("lookup-hint").textContent = "Captions are stored with the pictures; try your own words.";
  }
  if (keep && previous && memory && previous.shape.join() === memory.shape.join()) return;
  // Everything that belonged to the previous memory: picture, mask, noise, results, lookups.
  clearPictureSource();
  clearResult();
  clearLookup();
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
