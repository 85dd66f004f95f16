"""Cross-modal lookup accuracy: text -> image and (half) image -> caption.

For each memory method and each captioned data set it stores every pair, then asks:

- text -> image with the exact stored caption and with a paraphrase (reworded, not
  copied): correct at top-k when the right pair is among the memory's k best matches
  for the query (what the service reports as ``matches``);
- image -> caption with the top half of the image given (bottom half masked) and with
  the whole image: correct at top-k when the right caption is among the k stored
  captions nearest (cosine) to the completed caption part.

Fashion-MNIST captions are per class, so there a hit is the right class.

    .venv/bin/python scripts/crossmodal.py            # writes results/crossmodal.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from memory_core import HopfieldConfig, PCMemory, UniversalHopfield
from memory_core.captions import CaptionedImages, fashion_caption_pairs, photo_caption_pairs
from memory_core.crossmodal import JointLayout, nearest_captions
from memory_core.data import flatten
from memory_core.masks import bottom_half_unknown, pixel_mask_to_vector
from memory_core.text import encode_texts

KS = (1, 5)


class JointHopfield:
    """One auto-associative memory of joint patterns; lookups complete the missing part."""

    def __init__(self, layout: JointLayout, **config) -> None:
        self.layout = layout
        self.memory = UniversalHopfield(device="cpu", **config)

    def store(self, images: torch.Tensor, texts: torch.Tensor) -> None:
        self.memory.store(self.layout.join(images, texts))

    def text_to_image(self, texts: torch.Tensor) -> torch.Tensor:
        cue, mask = self.layout.text_cue(texts)
        return self.layout.image_part(self.memory.retrieve(cue, mask=mask))

    def rank_images(self, texts: torch.Tensor, k: int) -> torch.Tensor:
        cue, mask = self.layout.text_cue(texts)
        return self.memory.search(cue, k=k, mask=mask)[1]

    def image_to_text(self, images: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        cue, mask = self.layout.image_cue(images, image_mask)
        return self.layout.text_part(self.memory.retrieve(cue, mask=mask))


class JointPC:
    """A predictive-coding memory of joint patterns: clamp the known part, infer the rest.

    Its own completion is what it answers; a text query's ranking is the stored pictures
    nearest (euclidean) to the picture it completes.
    """

    def __init__(self, layout: JointLayout, **config) -> None:
        self.layout, self.config = layout, config
        self.memory: PCMemory | None = None
        self.images: torch.Tensor | None = None

    def store(self, images: torch.Tensor, texts: torch.Tensor) -> None:
        joint = self.layout.join(images, texts)
        self.memory = PCMemory(
            sizes=[*self.config.pop("hidden", (256, 512)), joint.shape[1]], device="cpu", **self.config
        )
        self.memory.fit(joint, progress=True)
        self.images = images

    def text_to_image(self, texts: torch.Tensor) -> torch.Tensor:
        cue, mask = self.layout.text_cue(texts)
        return self.layout.image_part(self.memory.retrieve(cue, mask=mask))

    def rank_images(self, texts: torch.Tensor, k: int) -> torch.Tensor:
        return torch.cdist(self.text_to_image(texts), self.images).topk(k, dim=1, largest=False).indices

    def image_to_text(self, images: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        cue, mask = self.layout.image_cue(images, image_mask)
        return self.layout.text_part(self.memory.retrieve(cue, mask=mask))


class HeteroHopfield:
    """Two hetero-associative memories: caption -> image and image -> caption."""

    def __init__(self, text_config: dict, image_config: dict) -> None:
        self.text_to_images = UniversalHopfield(device="cpu", **text_config)
        self.image_to_texts = UniversalHopfield(device="cpu", **image_config)

    def store(self, images: torch.Tensor, texts: torch.Tensor) -> None:
        self.text_to_images.store(texts, images)
        self.image_to_texts.store(images, texts)

    def text_to_image(self, texts: torch.Tensor) -> torch.Tensor:
        return self.text_to_images.retrieve(texts)

    def rank_images(self, texts: torch.Tensor, k: int) -> torch.Tensor:
        return self.text_to_images.search(texts, k=k)[1]

    def image_to_text(self, images: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        return self.image_to_texts.retrieve(images, mask=image_mask)


def methods(image_dim: int) -> dict[str, Callable[[], object]]:
    """Every memory method compared, by name."""
    return {
        "hopfield joint, defaults (euclidean softmax beta 100)": lambda: JointHopfield(
            JointLayout(image_dim), **asdict(HopfieldConfig())
        ),
        "hopfield joint, manhattan softmax": lambda: JointHopfield(
            JointLayout(image_dim), similarity="manhattan", separation="softmax", beta=50.0
        ),
        "hopfield joint, cosine softmax": lambda: JointHopfield(
            JointLayout(image_dim), similarity="cosine", separation="softmax", beta=200.0
        ),
        "hopfield hetero, cosine keys / manhattan keys": lambda: HeteroHopfield(
            dict(similarity="cosine", separation="softmax", beta=200.0),
            dict(similarity="manhattan", separation="softmax", beta=50.0),
        ),
        # The service's text weight (app/captions.py): the caption part is 384 of D + 384 entries.
        "pc joint, sizes [256, 512, D + 384], w = 10": lambda: JointPC(
            JointLayout(image_dim, text_weight=10.0)
        ),
    }


def hits_at_k(ranked: torch.Tensor, truth: torch.Tensor, k: int) -> float:
    """Fraction of rows whose first k ranked labels contain the true label."""
    return (ranked[:, :k] == truth[:, None]).any(dim=1).float().mean().item()


def evaluate(
    name: str, make, data: CaptionedImages, captions: torch.Tensor, paraphrases: torch.Tensor
) -> dict:
    images = flatten(data.images)
    n = len(data)
    # Labels: the pair's own index for photos; the class for Fashion-MNIST (per-class captions).
    label = data.labels if data.labels is not None else torch.arange(n)
    memory = make()
    memory.store(images, captions)
    result: dict[str, float] = {}
    for query_name, queries in (("exact", captions), ("paraphrase", paraphrases)):
        ranked = label[memory.rank_images(queries, k=max(KS))]  # (n, k) labels of the best matches
        for k in KS:
            result[f"text->image {query_name} top{k}"] = hits_at_k(ranked, label, k)
    c, h, w = data.images.shape[1:]
    half = pixel_mask_to_vector(bottom_half_unknown(h, w), c).expand(n, -1)
    for cue_name, mask in (("half image", half), ("whole image", torch.ones_like(half))):
        text_part = memory.image_to_text(images, mask)
        _, idx = nearest_captions(text_part, captions, k=max(KS))
        for k in KS:
            result[f"{cue_name}->caption top{k}"] = hits_at_k(label[idx], label, k)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/crossmodal.json"))
    parser.add_argument("--photo-size", type=int, default=64)
    parser.add_argument("--only", default="", help="run only the methods whose name contains this text")
    args = parser.parse_args()

    sets = {
        f"photos ({args.photo_size}x{args.photo_size}, 69 pairs)": photo_caption_pairs(args.photo_size),
        "Fashion-MNIST (100 pairs, per-class captions)": fashion_caption_pairs(10),
    }
    results = []
    started = time.perf_counter()
    jobs = [(s, m) for s in sets for m in methods(1) if args.only in m]
    for set_name, method_name in tqdm(jobs, desc="crossmodal"):
        data = sets[set_name]
        captions = encode_texts(data.captions, "cpu")
        paraphrases = encode_texts(data.paraphrases, "cpu")
        make = methods(flatten(data.images).shape[1])[method_name]
        results.append(
            {
                "data": set_name,
                "method": method_name,
                **evaluate(method_name, make, data, captions, paraphrases),
            }
        )

    columns = [k for k in results[0] if k not in ("data", "method")]
    print(f"\n| data | method | {' | '.join(columns)} |")
    print("|---|---|" + "---|" * len(columns))
    for row in results:
        print(
            f"| {row['data']} | {row['method']} | "
            + " | ".join(f"{100 * row[c]:.1f}%" for c in columns)
            + " |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "seconds": time.perf_counter() - started}, indent=1))
    print(f"\nwrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
