// Panel 2, what the memory recalls: the answer picture, then in words whether the cue was a
// stored pattern and whether the answer is one (the verdict), the figures, and the stored
// patterns nearest the answer as thumbnails.

import { api, enc } from "./api.js";
import { fmt, fmtScore } from "./format.js";
import { fitBase64Png, decodeBase64Png, mse, pngBase64 } from "./pictures.js";
import { dims, memPath, state } from "./state.js";

const $ = (id) => document.getElementById(id);

// Below this MSE two 8-bit pictures are the same picture (a rounding step is 1/255).
const SAME = 1e-5;

const storedImages = new Map(); // "memory/id" -> ImageData of a stored pattern (for the verdict)

// Forget the cached stored pictures (a pattern may have been deleted and stored again).
export function forgetStoredImages() {
  storedImages.clear();
}

// A stored pattern's picture at the memory's size (cached per memory and id).
async function storedImage(id) {
  const key = `${state.memory.name}/${id}`;
  if (!storedImages.has(key)) {
    const p = await api("GET", memPath(`/patterns/${enc(id)}`));
    storedImages.set(key, await fitBase64Png(p.image, dims()));
  }
  return storedImages.get(key);
}

// The result panel back to "nothing asked yet".
export function clearResult() {
  const r = $("result");
  r.getContext("2d").clearRect(0, 0, r.width, r.height);
  $("result-title").textContent = "Answer";
  const summary = $("result-summary");
  summary.replaceChildren(Object.assign(document.createElement("p"), { className: "muted", textContent: "Press Complete or Retrieve." }));
  for (const key of Object.keys(summary.dataset)) delete summary.dataset[key];
  $("matches").replaceChildren();
  $("matches-title").hidden = true;
  $("captions").replaceChildren();
  $("captions-title").hidden = true;
  const panel = $("result-panel");
  if (panel.dataset.state !== "error") panel.dataset.state = "idle"; // an error stays until the next recall
}

const bold = (text, cls = "") => Object.assign(document.createElement("b"), { textContent: text, className: cls });

// Show an answer: the picture (base64 PNG), then in words whether the cue was a stored pattern
// (its distance to the nearest of the matches, on the pixels it shows) and whether the answer
// is a stored pattern or the network's own reconstruction, then the matches.
export async function showResult(title, b64, answer, sent, extra) {
  const img = await decodeBase64Png(b64);
  const { c, h, w } = dims();
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
  for (const key of Object.keys(summary.dataset)) delete summary.dataset[key];
  const line = (cls) => summary.appendChild(Object.assign(document.createElement("p"), { className: cls }));
  if (matches.length) verdicts(line, matches, answer, sent, result, c);
  const toOriginal = mse(result, state.original, c);
  const facts = [`energy ${fmt(answer.energy)}`, `MSE to the original ${fmt(toOriginal)}`];
  if (extra) facts.push(extra);
  if (answer.state !== "ready") facts.push(`the memory is ${answer.state} (${answer.trained_count} trained)`);
  line("muted small").textContent = facts.join(" · ");
  summary.dataset.mse = String(toOriginal);
  showMatches(matches);
}

// The two verdicts: is the cue a stored pattern (on its visible pixels), is the answer one.
function verdicts(line, matches, answer, sent, result, c) {
  const summary = $("result-summary");
  const visible = state.mask.reduce((n, v) => n + v, 0);
  const dists = matches.map((m) => mse(sent, m.image, c, state.mask));
  const near = dists.indexOf(Math.min(...dists));
  const cueStored = dists[near] <= SAME;
  const cue = line(`verdict ${cueStored ? "stored" : "new"}`);
  cue.id = "verdict-cue";
  if (cueStored) cue.append("Your cue is the stored pattern ", bold(matches[near].id), ` on its ${visible} visible pixels.`);
  else cue.append("Your cue is not a stored pattern: the nearest, ", bold(matches[near].id), `, differs by MSE ${fmt(dists[near])} on the ${visible} visible pixels.`);
  const best = matches[0];
  const gap = mse(result, best.image, c);
  const report = answer.recall; // kind pc: what the recall did, in the service's words
  const isStored = report ? report.stored : gap <= SAME;
  const ans = line(`verdict ${isStored ? "stored" : "new"}`);
  ans.id = "verdict-answer";
  if (report) reportVerdict(ans, report, answer.trained_count);
  else if (isStored) ans.append("The answer is the stored pattern ", bold(best.id, "best-id"), ".");
  else ans.append("The answer is the network's reconstruction, not a stored pattern: MSE ", fmt(gap), " from the nearest stored pattern, ", bold(best.id, "best-id"), ".");
  const named = report ? report.nearest.id : best.id;
  Object.assign(summary.dataset, { best: named, cue: cueStored ? "stored" : "new", cueMse: String(dists[near]), answer: isStored ? "stored" : "reconstruction", answerMse: String(report ? report.nearest.mse : gap) });
}

// A pc memory's answer is always the network's own prediction; its recall report says
// whether that is the reconstruction of a stored pattern (the memory index landed on it).
function reportVerdict(line, report, trained) {
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

function showMatches(matches) {
  const list = $("matches");
  list.replaceChildren();
  $("matches-title").hidden = !matches.length;
  for (const m of matches) {
    const li = document.createElement("li");
    li.dataset.id = m.id;
    const src = `data:image/png;base64,${pngBase64(m.image)}`;
    li.append(Object.assign(new Image(), { src, alt: m.id }), `${m.id} (${fmtScore(m.score)})`);
    list.append(li);
  }
}
