// Panel 3's jobs (demo loads and training): cards with status, progress, epoch, energy, ETA,
// why a job ended and a Cancel button; polled while any job runs, after which the memories
// are reloaded (a trained memory changes state).

import { api, enc } from "./api.js";
import { panelActions, showError } from "./feedback.js";
import { duration, fmt } from "./format.js";
import { loadMemories } from "./memories.js";
import { state } from "./state.js";

const $ = (id) => document.getElementById(id);
const FINISHED = ["succeeded", "failed", "cancelled"];
const act = panelActions("memory-busy");

let jobs = []; // GET /v1/jobs, and the jobs followed since
let timer = null;

const running = (list) => list.some((j) => !FINISHED.includes(j.status));

// ", 3 min left" while a job runs with an estimate, else "".
export const eta = (j) => (j.eta_seconds === null || j.eta_seconds === undefined || j.status !== "running" ? "" : `, ${duration(j.eta_seconds)} left`);

// Poll one job until it ends; onUpdate(job) each time; resolves to the final job.
export async function followJob(id, onUpdate) {
  for (;;) {
    const job = await api("GET", `/v1/jobs/${enc(id)}`);
    onUpdate(job);
    const i = jobs.findIndex((j) => j.id === job.id);
    if (i >= 0) jobs[i] = job;
    else jobs.push(job);
    renderJobs(jobs);
    if (FINISHED.includes(job.status)) return job;
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Refresh the jobs list; keep polling while any job is unfinished, then refresh the memories.
export async function pollJobs() {
  clearTimeout(timer);
  let fresh;
  try {
    ({ jobs: fresh } = await api("GET", "/v1/jobs"));
  } catch (err) {
    showError(err);
    return;
  }
  const wasRunning = running(jobs);
  jobs = fresh;
  renderJobs(jobs);
  const isRunning = running(jobs);
  if (isRunning) timer = setTimeout(pollJobs, 500);
  if (wasRunning && !isRunning && state.memory) loadMemories().catch(showError);
}

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

// Jobs as cards (newest first). A job's card is made once and updated in place, so that
// polling never replaces a button under a finger.
function renderJobs(list) {
  const ul = $("jobs");
  const shown = [...list].reverse().slice(0, 10);
  const keep = new Set(shown.map((j) => j.id));
  for (const li of [...ul.children]) if (!keep.has(li.dataset.job)) li.remove();
  if (!shown.length) {
    ul.append(Object.assign(document.createElement("li"), { className: "empty muted small", textContent: "No jobs." }));
    return;
  }
  shown.forEach((j, i) => {
    const li = ul.querySelector(`li[data-job="${CSS.escape(j.id)}"]`) || jobCard(j);
    if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
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
  set(".job-eta", eta(j).replace(/^, /, ""));
  set(".job-reason", jobOutcome(j));
  li.querySelector(".cancel").hidden = FINISHED.includes(j.status);
}
