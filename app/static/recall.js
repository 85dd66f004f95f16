// Panel 1's recall buttons: Complete (fill the hidden pixels), Retrieve (the stored pattern
// the cue recalls) and Caption it (text memories), each sending exactly the cue the page shows.

import { ApiError, api } from "./api.js";
import { currentCue, currentMask, hiddenCount } from "./editor.js";
import { fmt } from "./format.js";
import { pngBase64 } from "./pictures.js";
import { showResult } from "./result.js";
import { memPath, state } from "./state.js";

const $ = (id) => document.getElementById(id);

function needPicture() {
  if (!state.memory) throw new ApiError(0, "no_memory", "pick a memory first");
  if (!state.original) throw new ApiError(0, "no_picture", "upload a photo or pick a stored one first");
}

// The cue (and the mask, always or when some pixel is hidden) as the API takes them.
function cueBody(withMask) {
  const sent = currentCue();
  const body = { image: pngBase64(sent), k: 5 };
  if (withMask || hiddenCount()) body.mask = pngBase64(currentMask());
  return { sent, body };
}

export async function complete() {
  needPicture();
  const { sent, body } = cueBody(true);
  const answer = await api("POST", memPath("/complete"), body);
  await showResult("Completion", answer.image, answer, sent, `${answer.unknown_pixels} pixels filled`);
}

export async function retrieve() {
  needPicture();
  const { sent, body } = cueBody(false);
  const answer = await api("POST", memPath("/retrieve"), body);
  await showResult("Retrieved", answer.pattern.image, answer, sent);
}

export async function captionCue() {
  needPicture();
  const answer = await api("POST", memPath("/lookup"), cueBody(false).body);
  const list = $("captions");
  list.replaceChildren();
  $("captions-title").hidden = false;
  for (const c of answer.captions) {
    const li = document.createElement("li");
    li.textContent = `“${c.text}” (${c.id}, score ${fmt(c.score)})`;
    list.append(li);
  }
}
