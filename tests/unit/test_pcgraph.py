"""PCGraph (memory_core.pcgraph): predictive coding on arbitrary graphs.

Graph helpers; inference descends the energy; end to end on scikit-learn digits ([image ;
one-hot label] patterns, one trained graph per topology: classification, completion,
generation, denoising, energy); the API (callback, determinism, save/load, old config
keys, devices); bad input. The gradients against autograd: tests/numerics/test_pcgraph_numerics.py.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from memory_core import EmptyMemoryError
from memory_core.data import digits, flatten
from memory_core.pcgraph import (
    LEGACY_KEYS,
    PCGraph,
    PCGraphConfig,
    as_adjacency,
    fully_connected,
    layered,
    random_sparse,
)

PIXELS, CLASSES = 64, 10
DIM = PIXELS + CLASSES


pytestmark = pytest.mark.usefixtures("one_thread")  # small matmuls (see conftest)


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    """Digits as [64 pixels ; one-hot label] patterns: 1000 to train on, 797 held out."""
    images, labels = digits()
    patterns = torch.cat([flatten(images), F.one_hot(labels, CLASSES).float()], dim=1)  # (1797, 74)
    return {
        "train": patterns[:1000],
        "test": patterns[1000:],
        "train_y": labels[:1000],
        "test_y": labels[1000:],
    }


def make(topology: str, **kw) -> PCGraph:
    hidden = 32 if topology != "layered" else (32,)
    args = dict(weight_lr=3e-3, batch_size=100, seed=0, device="cpu") | kw
    return PCGraph(DIM, hidden, topology, **args)


@pytest.fixture(scope="module")
def trained(data) -> dict[str, PCGraph]:
    graphs = {}
    for topology in ("fully_connected", "layered"):
        g = make(topology)
        g.fit(data["train"], epochs=5, progress=False)
        graphs[topology] = g
    return graphs


def image_known(batch: int, pixels: int = PIXELS) -> torch.Tensor:
    mask = torch.zeros(batch, DIM, dtype=torch.bool)
    mask[:, :pixels] = True
    return mask


# --- graph helpers ---------------------------------------------------------------------------
def test_fully_connected_has_every_edge_but_self_loops():
    adj = fully_connected(5)
    assert adj.dtype == torch.bool and int(adj.sum()) == 20 and not bool(adj.diagonal().any())


def test_layered_joins_consecutive_blocks_only():
    down = layered([3, 2, 1])  # block 0 = vertices 0-2, block 1 = 3-4, block 2 = 5
    assert bool(down[3:5, 0:3].all()) and bool(down[5:6, 3:5].all())
    assert int(down.sum()) == 3 * 2 + 2 * 1  # nothing else: no skips, no upward edges
    assert torch.equal(layered([3, 2, 1], "up"), down.T)
    assert torch.equal(layered([3, 2, 1], "both"), down | down.T)
    with pytest.raises(ValueError, match="direction"):
        layered([3, 2], "sideways")
    with pytest.raises(ValueError, match="layers"):
        layered([3])


def test_random_sparse_density_seed_and_no_self_loops():
    adj = random_sparse(200, 0.1, seed=3)
    assert not bool(adj.diagonal().any())
    assert abs(float(adj.float().sum()) / (200 * 199) - 0.1) < 0.01
    assert torch.equal(adj, random_sparse(200, 0.1, seed=3))
    assert not torch.equal(adj, random_sparse(200, 0.1, seed=4))


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_adjacency_is_accepted():
    dense = random_sparse(30, 0.2, seed=1)
    assert torch.equal(as_adjacency(dense.float().to_sparse()), dense)
    assert torch.equal(as_adjacency(dense.float().to_sparse_csr()), dense)
    with pytest.raises(ValueError, match="0/1"):
        as_adjacency(dense.float() * 2)
    with pytest.raises(ValueError, match="square"):
        as_adjacency(torch.ones(3, 4))


def test_inference_descends_the_energy_and_keeps_clamped_vertices(trained, data):
    g = trained["fully_connected"]
    cold = copy.copy(g)  # the same weights, inference from hidden = 0 (no sweeps)
    cold.config = dataclasses.replace(g.config, init_sweeps=0)
    cue = data["test"][:50]
    mask = image_known(50)
    for graph in (g, cold):
        energies = [
            float(graph.state_energy(graph.infer(cue, mask, steps=s)).mean()) for s in (0, 1, 5, 20, 100)
        ]
        assert all(b < a for a, b in itertools.pairwise(energies)), energies
        if graph is cold:
            assert energies[-1] < 0.8 * energies[0]
            cold_start = energies[0]
    # the sweeps x_free <- mu start inference nearer the minimum
    assert float(g.state_energy(g.infer(cue, mask, steps=0)).mean()) < 0.9 * cold_start
    out = g.retrieve(cue, mask, steps=20)
    assert torch.equal(out[:, :PIXELS], cue[:, :PIXELS])


def test_learning_stays_on_the_edges(data):
    g = make("random", density=0.3)
    g.fit(data["train"][:300], epochs=1, progress=False)
    assert float(g.weights[~g.adjacency].abs().max()) == 0.0
    assert float(g.weights[g.adjacency].abs().min()) > 0.0


# --- end to end on digits -------------------------------------------------------------------
@pytest.mark.parametrize("topology", ["fully_connected", "layered"])
def test_training_lowers_the_energy_and_one_graph_does_every_task(topology, trained, data):
    g, test, labels = trained[topology], data["test"], data["test_y"]

    # classification: clamp the image, read the label vertices
    out = g.retrieve(test, image_known(len(test)))
    accuracy = float((out[:, PIXELS:].argmax(dim=1) == labels).float().mean())
    assert accuracy > 0.75, accuracy  # chance is 0.1

    # completion: clamp the top half of the image; compare the bottom half with the mean image
    top = image_known(len(test), pixels=PIXELS // 2)
    filled = g.retrieve(test, top)[:, PIXELS // 2 : PIXELS]
    truth = test[:, PIXELS // 2 : PIXELS]
    mse = float(((filled - truth) ** 2).mean())
    mean_image_mse = float(((data["train"][:, PIXELS // 2 : PIXELS].mean(0) - truth) ** 2).mean())
    assert mse < 0.9 * mean_image_mse, (mse, mean_image_mse)

    # generation: clamp a one-hot label; the image is nearest to its own class's mean image
    means = torch.stack([data["train"][data["train_y"] == c, :PIXELS].mean(0) for c in range(CLASSES)])
    cue = torch.cat([torch.zeros(CLASSES, PIXELS), torch.eye(CLASSES)], dim=1)
    label_known = ~image_known(CLASSES)
    generated = g.retrieve(cue, label_known)[:, :PIXELS]
    hits = int((torch.cdist(generated, means).argmin(dim=1) == torch.arange(CLASSES)).sum())
    assert hits >= 7, hits

    # energy: held-out digits are far more probable than uniform noise
    noise = torch.rand(len(test), DIM, generator=torch.Generator().manual_seed(0))
    assert float(g.energy(test).mean()) < 0.3 * float(g.energy(noise).mean())


def test_fully_connected_graph_denoises(trained, data):
    g, test = trained["fully_connected"], data["test"]
    noisy = test + 0.2 * torch.randn(test.shape, generator=torch.Generator().manual_seed(0))
    cleaned = g.retrieve(noisy)  # nothing clamped: relax from the noisy cue
    before = float(((noisy[:, :PIXELS] - test[:, :PIXELS]) ** 2).mean())
    after = float(((cleaned[:, :PIXELS] - test[:, :PIXELS]) ** 2).mean())
    assert after < 0.8 * before, (after, before)


# --- the API ---------------------------------------------------------------------------------
def test_fit_history_callback_and_determinism(data):
    seen = []
    g = make("layered")
    history = g.fit(
        data["train"][:200], epochs=4, progress=False, callback=lambda r: seen.append(r) or r["epoch"] < 2
    )
    assert [r["epoch"] for r in history] == [1, 2] and history == seen  # stopped after epoch 2
    assert all(r["epochs"] == 4 and r["energy"] > 0 for r in history)
    same = make("layered")
    same.fit(data["train"][:200], epochs=2, progress=False)
    assert torch.equal(same.weights, g.weights) and torch.equal(same.bias, g.bias)
    other = make("layered", seed=1)
    other.fit(data["train"][:200], epochs=2, progress=False)
    assert not torch.equal(other.weights, g.weights)
    more = g.fit(data["train"][:200], epochs=3, progress=False)  # continues from where it was
    assert more[-1]["energy"] < history[0]["energy"]


def test_save_and_load_round_trip(trained, data, tmp_path):
    g = trained["layered"]
    path = tmp_path / "ckpt" / "graph.safetensors"
    g.save(path)
    g.save(path)  # overwrite in place
    assert os.listdir(path.parent) == ["graph.safetensors"]  # no temp file left behind
    loaded = PCGraph.load(path, device="cpu")
    assert loaded.config == g.config and loaded.trained_count == g.trained_count
    assert torch.equal(loaded.adjacency, g.adjacency)
    cue, mask = data["test"][:20], image_known(20)
    assert torch.equal(loaded.retrieve(cue, mask, steps=30), g.retrieve(cue, mask, steps=30))
    # training continues identically: the optimiser's state is saved too
    a, b = PCGraph.load(path, device="cpu"), PCGraph.load(path, device="cpu")
    a.fit(data["train"][:100], epochs=1, progress=False)
    b.fit(data["train"][:100], epochs=1, progress=False)
    assert torch.equal(a.weights, b.weights)
    (tmp_path / "garbage.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a PCGraph checkpoint"):
        PCGraph.load(tmp_path / "garbage.safetensors")
    save_file({"weights": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="no PCGraph metadata"):
        PCGraph.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        PCGraph.load(tmp_path / "missing.safetensors")


def test_configs_and_checkpoints_with_the_old_key_names_still_load(data, tmp_path):
    """PCGraphConfig took PCMemory's names for the same knobs; what was stored under the old
    ones (service configs, checkpoints) still loads, and the old keywords still work."""
    old = {
        "dim": 5,
        "hidden": 7,
        "inference_steps": 9,
        "inference_lr": 0.05,
        "inference_momentum": 0.5,
        "lr": 1e-3,
    }
    config = PCGraphConfig.from_dict(old)
    assert (config.train_steps, config.infer_lr, config.momentum, config.weight_lr) == (9, 0.05, 0.5, 1e-3)
    assert set(LEGACY_KEYS.values()) <= set(dataclasses.asdict(config))
    with pytest.raises(ValueError, match="old name of 'weight_lr'"):
        PCGraphConfig.from_dict({"dim": 5, "lr": 1e-3, "weight_lr": 1e-3})
    with pytest.raises(ValueError, match="unknown"):
        PCGraphConfig.from_dict({"dim": 5, "inference_rate": 0.1})
    with pytest.warns(DeprecationWarning, match="old names"):
        assert PCGraph(5, 7, lr=1e-3, inference_steps=4, device="cpu").config.train_steps == 4
    with pytest.raises(TypeError, match="unknown"):
        PCGraph(5, 7, rate=1e-3, device="cpu")

    g = make("layered")
    g.fit(data["train"][:200], epochs=1, progress=False)
    path = tmp_path / "old.safetensors"
    g.save(path)
    with safe_open(str(path), framework="pt") as fh:  # the metadata as written before the rename
        meta = fh.metadata()
    stored = json.loads(meta["config"])
    for old_key, new_key in LEGACY_KEYS.items():
        stored[old_key] = stored.pop(new_key)
    old = {k: v for k, v in meta.items() if k != "sha256"}  # written before checksums were kept, too
    save_file(load_file(str(path)), str(path), metadata=old | {"config": json.dumps(stored)})
    loaded = PCGraph.load(path, device="cpu")
    assert loaded.config == g.config
    cue = data["test"][:4]
    assert torch.equal(loaded.retrieve(cue, image_known(4)), g.retrieve(cue, image_known(4)))


def test_custom_topology_float64_and_to(data):
    adj = layered([DIM, 16], "both").to_sparse()  # cycles between the two layers
    g = PCGraph(
        DIM, 16, "custom", adjacency=adj, weight_lr=3e-3, batch_size=100, device="cpu", dtype=torch.float64
    )
    g.fit(data["train"][:300], epochs=2, progress=False)
    assert g.weights.dtype == torch.float64 and float(g.weights[~g.adjacency].abs().max()) == 0.0
    out = g.to("cpu").retrieve(data["test"][:5].double(), image_known(5))
    assert out.shape == (5, DIM) and out.dtype == torch.float64
    assert "custom" in repr(g)


# --- bad input -------------------------------------------------------------------------------
def test_bad_input_is_refused(trained, data):
    g = trained["fully_connected"]
    with pytest.raises(EmptyMemoryError):
        make("layered").retrieve(data["test"][:2])
    with pytest.raises(ValueError, match="dimension"):
        g.retrieve(torch.rand(2, DIM + 1))
    with pytest.raises(ValueError, match="NaN"):
        g.fit(torch.full((2, DIM), float("nan")), progress=False)
    with pytest.raises(TypeError, match="bool"):
        g.retrieve(data["test"][:2], torch.ones(2, DIM))
    with pytest.raises(ValueError, match="no known entry"):
        g.retrieve(data["test"][:2], torch.zeros(2, DIM, dtype=torch.bool))
    with pytest.raises(ValueError, match="topology"):
        PCGraph(DIM, 8, "ring")
    with pytest.raises(ValueError, match="activation"):
        PCGraph(DIM, 8, activation="softmax")
    with pytest.raises(ValueError, match="adjacency"):
        PCGraph(DIM, 8, "custom")
    with pytest.raises(ValueError, match="adjacency"):
        PCGraph(DIM, 8, adjacency=fully_connected(DIM + 8))
    with pytest.raises(ValueError, match="vertices"):
        PCGraph(DIM, 8, "custom", adjacency=fully_connected(DIM))
    with pytest.raises(ValueError, match="infer_lr"):
        PCGraph(DIM, 8, infer_lr=0)
    with pytest.raises(ValueError, match="momentum"):
        PCGraph(DIM, 8, momentum=1.0)
    with pytest.raises(ValueError, match="init_sweeps"):
        PCGraph(DIM, 8, init_sweeps=-1)
    with pytest.raises(ValueError, match="epochs"):
        g.fit(data["train"][:2], epochs=-1, progress=False)
