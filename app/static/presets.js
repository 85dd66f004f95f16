// Panel 3's "new demo memory from bundled data" (a preset and a kind, loaded by a job whose
// progress shows under the button) and Train for the picked memory (kind pc).

import { ApiError, api } from "./api.js";
import { eta, followJob, pollJobs } from "./jobs.js";
import { loadMemories } from "./memories.js";
import { memPath, state } from "./state.js";

const $ = (id) => document.getElementById(id);

export async function loadPresets() {
  const { presets } = await api("GET", "/v1/demo");
  state.presets = presets;
  const select = $("preset-select");
  select.replaceChildren();
  for (const p of presets.filter((x) => x.kind !== "relational")) select.add(new Option(`${p.title} (${p.default_count})`, p.name));
  showPreset();
}

export function showPreset() {
  const p = state.presets.find((x) => x.name === $("preset-select").value);
  $("preset-description").textContent = p ? `${p.description}. Memory “${p.memory_name}”, shape ${p.shape.join("×")}.` : "";
}

// Make the demo memory of the chosen preset and kind, follow its load, then pick it (and
// train it, for a kind that needs training); one that exists already is picked.
export async function createDemo() {
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

// Start training the picked memory (epochs from the box, else its default); the jobs list follows it.
export async function train() {
  const epochs = Number($("train-epochs").value);
  const body = epochs > 0 ? { epochs } : {};
  const job = await api("POST", memPath("/train"), body);
  pollJobs();
  await loadMemories(); // the memory says "training" and Train goes away while its job runs
  return job;
}
