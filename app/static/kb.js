// The knowledge-base panel of the demo page: load a relational preset (its facts, then a
// training job), pick a relation and the known arguments, and see every entity ranked as
// the missing one. demo.js hands this module the job follower and the memory reload (setup)
// and memories.js the memories and presets it loads (update); nothing here imports them
// back. The panel's work shows in its own busy label (#kb-busy), never in another panel's.

import { ApiError, api } from "./api.js";
import { onPressOnce, panelActions } from "./feedback.js";
import { maxPage } from "./state.js";

const $ = (id) => document.getElementById(id);
const HOLE = "\u0000?"; // the value of an argument's "?" option (no entity name starts with NUL)

const kb = {
  deps: null, // {followJob, loadMemories}
  memories: [], // relational memories, as GET /v1/memories gives them
  presets: [], // relational presets
  memory: null, // the picked one
  vocabulary: null, // GET .../vocabulary of the picked one
  training: false, // this page follows a training job of the picked one
};

const act = panelActions("kb-busy");

export function setup(deps) {
  kb.deps = deps;
  $("kb-select").addEventListener("change", (e) => act("Loading", () => pick(e.target.value)));
  $("kb-relation").addEventListener("change", renderArgs);
  onPressOnce($("kb-load"), () => act("Loading the knowledge base", loadPreset));
  $("kb-train").addEventListener("click", () => act("Training", train));
  $("kb-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act("Asking", ask);
  });
}

// The page's memories and presets changed (or were loaded): refresh the panel, keeping the pick.
export async function update(memories, presets) {
  kb.memories = memories.filter((m) => m.kind === "relational");
  kb.presets = presets.filter((p) => p.kind === "relational");
  const presetSelect = $("kb-preset");
  const keep = presetSelect.value;
  presetSelect.replaceChildren(...kb.presets.map((p) => new Option(`${p.title} (${p.default_count} facts)`, p.name)));
  if (kb.presets.some((p) => p.name === keep)) presetSelect.value = keep;
  const select = $("kb-select");
  select.replaceChildren(new Option(kb.memories.length ? "(pick)" : "(none yet)", ""));
  for (const m of kb.memories) select.add(new Option(`${m.name} (${m.count})`, m.name));
  const current = kb.memory && kb.memories.find((m) => m.name === kb.memory.name);
  const chosen = current || kb.memories.find((m) => m.name.startsWith("demo-")) || kb.memories[0];
  await pick(chosen ? chosen.name : "", current !== undefined && current !== null);
}

// Pick a knowledge base (keep: the same one refreshed, so the question stays as it is).
export async function pick(name, keep = false) {
  kb.memory = kb.memories.find((m) => m.name === name) || null;
  $("kb-select").value = kb.memory ? kb.memory.name : "";
  $("kb-form").hidden = !kb.memory;
  if (!kb.memory) {
    $("kb-train").hidden = true;
    kb.vocabulary = null;
    $("kb-details").textContent = "No knowledge base yet: load one of the presets.";
    clearAnswer();
    return;
  }
  const m = kb.memory;
  renderState();
  if (keep && kb.vocabulary) return;
  kb.vocabulary = await api("GET", `/v1/memories/${encodeURIComponent(m.name)}/vocabulary?limit=${maxPage()}`);
  const relations = $("kb-relation");
  relations.replaceChildren(...kb.vocabulary.relations.map((r) => new Option(`${r.name} (${r.arity})`, r.name)));
  const preferred = ["exports3", "borders"].find((n) => kb.vocabulary.relations.some((r) => r.name === n));
  if (preferred) relations.value = preferred;
  renderArgs();
  clearAnswer();
}

// What the picked knowledge base can do now: Train unless it is trained or training; Ask once
// it has a model (before its first training the service answers 409 not_trained).
function renderState() {
  const m = kb.memory;
  const training = kb.training || m.state === "training";
  const noModel = m.state === "untrained" || (m.state === "training" && m.trained_count === 0);
  $("kb-train").hidden = m.state === "ready" || training;
  $("kb-form").querySelector("button[type=submit]").disabled = noModel;
  let text = m.state === "ready" ? "trained on all of them" : `${m.state}, ${m.trained_count} trained`;
  if (noModel) text += training ? ": ask once the training below is done" : ": press Train, then ask";
  $("kb-details").textContent = `${m.count} facts, ${text}.`;
}

// One select per argument of the relation: an entity, or "?" for the one asked for.
function renderArgs() {
  const relation = kb.vocabulary.relations.find((r) => r.name === $("kb-relation").value);
  const box = $("kb-args");
  box.replaceChildren();
  if (!relation) return;
  const entities = kb.vocabulary.entities;
  for (let i = 0; i < relation.arity; i++) {
    const label = document.createElement("label");
    label.className = "grow";
    const select = document.createElement("select");
    select.className = "kb-arg";
    select.add(new Option("? (ask)", HOLE));
    for (const e of entities) select.add(new Option(e, e));
    select.value = i === relation.arity - 1 ? HOLE : entities[i % Math.max(entities.length, 1)] || HOLE;
    label.append(`${i + 1}`, select);
    box.append(label);
  }
  if (kb.vocabulary.entity_count > entities.length) {
    box.append(Object.assign(document.createElement("span"), { className: "muted small", textContent: `(the first ${entities.length} of ${kb.vocabulary.entity_count} entities)` }));
  }
}

function clearAnswer() {
  $("kb-question").textContent = "";
  $("kb-results").replaceChildren();
  delete $("kb-results").dataset.best;
}

async function ask() {
  if (!kb.memory) throw new ApiError(0, "no_memory", "load a knowledge base first");
  const relation = $("kb-relation").value;
  const args = [...document.querySelectorAll(".kb-arg")].map((s) => (s.value === HOLE ? null : s.value));
  const k = Number($("kb-k").value) || 10;
  const body = { relation, args, k, filter_known: $("kb-filter").checked };
  const shown = args.map((a) => (a === null ? "?" : a)).join(", ");
  $("kb-question").textContent = `${relation}(${shown})`;
  const answer = await api("POST", `/v1/memories/${encodeURIComponent(kb.memory.name)}/query`, body);
  renderAnswer(answer);
}

// The ranking, best first: rank, entity, a bar for its score between the list's lowest
// (empty) and highest (full), the score, and whether the completed fact is stored.
function renderAnswer(answer) {
  const list = $("kb-results");
  list.replaceChildren();
  const scores = answer.candidates.map((c) => c.score);
  const top = Math.max(...scores);
  const bottom = Math.min(...scores);
  for (const [i, c] of answer.candidates.entries()) {
    const li = document.createElement("li");
    li.dataset.entity = c.entity;
    const rank = Object.assign(document.createElement("span"), { className: "kb-rank", textContent: `${i + 1}.` });
    const name = Object.assign(document.createElement("span"), { className: "kb-entity", textContent: c.entity });
    const bar = Object.assign(document.createElement("span"), { className: "kb-bar" });
    bar.style.setProperty("--w", top > bottom ? `${(100 * (c.score - bottom)) / (top - bottom)}%` : "100%");
    const score = Object.assign(document.createElement("span"), { className: "kb-score muted small", textContent: c.score.toFixed(3) });
    li.append(rank, name, bar, score);
    if (c.known) li.append(Object.assign(document.createElement("span"), { className: "badge", textContent: "stored" }));
    list.append(li);
  }
  list.dataset.best = answer.candidates.length ? answer.candidates[0].entity : "";
  if (answer.state !== "ready") {
    $("kb-question").textContent += ` (the memory is ${answer.state}: ${answer.trained_count} facts trained)`;
  }
}

// POST /v1/demo with the preset (its facts, by a job), then train it (another job).
async function loadPreset() {
  const { followJob, loadMemories } = kb.deps;
  const preset = kb.presets.find((p) => p.name === $("kb-preset").value);
  if (!preset) throw new ApiError(0, "no_preset", "no knowledge base to load");
  const name = preset.memory_name;
  try {
    const started = await api("POST", "/v1/demo", { preset: preset.name });
    await followJob(started.job.id, (j) => status(`loading ${preset.title}: ${Math.round(100 * j.progress)}%`));
  } catch (err) {
    if (err.code !== "memory_exists") throw err;
  }
  await loadMemories(); // calls update(): the new memory appears in the select
  // Already shown (a visitor who finds it loaded): picking it again would rebuild the question
  // and undo what the visitor chose meanwhile.
  if (!kb.memory || kb.memory.name !== name) await pick(name);
  if (kb.memory && kb.memory.state !== "ready") await train();
}

async function train() {
  const { followJob, loadMemories } = kb.deps;
  const path = `/v1/memories/${encodeURIComponent(kb.memory.name)}/train`;
  const job = await api("POST", path, {});
  kb.training = true;
  renderState();
  let done;
  try {
    done = await followJob(job.id, (j) => {
      const eta = j.status === "running" && j.eta_seconds !== null ? `, ${Math.round(j.eta_seconds)} s left` : "";
      const loss = j.energy === null ? "" : `, loss ${j.energy.toFixed(3)}`;
      status(`training: epoch ${j.epoch}/${j.epochs}${loss}${eta}`);
    });
  } finally {
    kb.training = false;
  }
  status(done.status === "succeeded" ? `trained ${done.epochs} epochs on ${done.patterns} facts.` : `training ${done.status}.`);
  await loadMemories();
}

function status(text) {
  $("kb-status").textContent = text;
}
