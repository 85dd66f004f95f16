// The "Find pictures by caption" panel (text memories): the memory's own completion of the
// caption's picture, then the stored pictures whose captions fit best, as cards; clicking a
// card's picture hands its id to onPick.

import { ApiError, api } from "./api.js";
import { fmt, fmtScore } from "./format.js";
import { memPath } from "./state.js";

const $ = (id) => document.getElementById(id);

export function clearLookup() {
  $("lookup-results").replaceChildren();
  delete $("lookup-results").dataset.best;
  $("lookup-text").value = "";
}

function card(b64, title, sub, id, onPick) {
  const fig = document.createElement("figure");
  fig.className = "card";
  if (b64) {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    img.alt = title;
    fig.append(img);
  }
  const cap = document.createElement("figcaption");
  const strong = document.createElement("strong");
  strong.textContent = title;
  cap.append(strong, document.createElement("br"), sub);
  fig.append(cap);
  if (id) {
    fig.dataset.id = id;
    if (b64 && onPick) {
      fig.title = "use this picture";
      fig.addEventListener("click", () => onPick(id));
    }
  }
  return fig;
}

// Ask the picked memory for the k pictures that fit `text`; onPick(id) (or null: the cards
// are not clickable) when a card is clicked.
export async function lookupText(text, k, onPick) {
  if (!text.trim()) throw new ApiError(0, "empty_text", "type a caption first");
  const answer = await api("POST", memPath("/lookup"), { text, k });
  const out = $("lookup-results");
  out.replaceChildren();
  const completion = answer.completion && answer.completion.image;
  if (completion) out.append(card(completion, "completion", `energy ${fmt(answer.energy)}`));
  for (const p of answer.patterns || []) out.append(card(p.image, `${p.id} (${fmtScore(p.score)})`, p.text || "", p.id, onPick));
  out.dataset.best = answer.patterns && answer.patterns.length ? answer.patterns[0].id : "";
}
