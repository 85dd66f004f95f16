"""The same science on an accelerator: CUDA results against the CPU's, and the issue's figures there.

Every other test pins ``device="cpu"`` (CI has no GPU). This module runs the memories on
the device named by ``AMS_TEST_ACCEL`` (default ``cuda``) and compares them with the CPU
on the same seeds, in float64 where the comparison is exact up to summation order. Where
that device is absent, the whole module is skipped and says so: on CI it is reported as
skipped, never as passed. ``scripts/device_check.sh`` runs it on a lent GPU;
``AMS_TEST_ACCEL=cpu`` runs it here, CPU against CPU, to check the module itself.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from service_helpers import png_b64, wait_job
from torch import nn

from memory_core import PCGraph, PCMemory, UniversalHopfield
from memory_core.data import digits, flatten, natural_patches
from memory_core.masks import bottom_half_unknown, pixel_mask_to_vector
from memory_core.zil import zil_gradients

ACCEL = os.environ.get("AMS_TEST_ACCEL", "cuda")


def _available(name: str) -> bool:
    kind = torch.device(name).type
    return kind == "cpu" or (kind == "cuda" and torch.cuda.is_available())


pytestmark = pytest.mark.skipif(not _available(ACCEL), reason=f"no {ACCEL} device (set AMS_TEST_ACCEL)")


def on_cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu")


# --- PCMemory --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def patches() -> torch.Tensor:
    return flatten(natural_patches(32, count=32))  # (32, 3072)


@pytest.fixture(scope="module")
def stored(patches) -> PCMemory:
    """The issue's small-scale model, fit's defaults, on the accelerator."""
    pc = PCMemory(sizes=[256, 512, 3072], device=ACCEL)
    pc.fit(patches.to(ACCEL), progress=False)
    return pc


def test_pc_recall_figures_hold_on_the_accelerator(stored, patches):
    x = patches.to(ACCEL)
    assert stored.weights[0].device.type == torch.device(ACCEL).type
    noise = 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    noisy_ok = ((stored.retrieve(x + noise.to(ACCEL)) - x).square().mean(1) < 0.005).float().mean()
    mask = pixel_mask_to_vector(bottom_half_unknown(32, 32), 3).expand_as(x).to(ACCEL)
    out = stored.retrieve(torch.where(mask, x, 0.0), mask=mask)
    assert torch.equal(out[mask], x[mask])
    half_ok = ((out - x).square().mean(1) < 0.001).float().mean()
    assert noisy_ok >= 0.95 and half_ok >= 0.95, (float(noisy_ok), float(half_ok))


def test_pc_training_follows_the_cpu_in_float64(patches):
    """Same seed, same data: the accelerator's fit, recall and energy are the CPU's."""
    x = patches[:16].double()
    args = {"sizes": [32, 64, 3072], "dtype": torch.float64, "seed": 0, "epochs": 6, "batch_size": 8,
            "stop_energy": 0.0}
    cpu, acc = PCMemory(device="cpu", **args), PCMemory(device=ACCEL, **args)
    h_cpu, h_acc = cpu.fit(x, progress=False), acc.fit(x.to(ACCEL), progress=False)
    # Summation order differs between devices; a real difference (a step, a rate, a
    # mask wrong on one device) shows at the percent level, not at 1e-6.
    torch.testing.assert_close(torch.tensor(list(h_acc)), torch.tensor(list(h_cpu)), rtol=1e-6, atol=0)
    for p, q in zip(acc.parameters(), cpu.parameters()):
        torch.testing.assert_close(on_cpu(p), q, rtol=1e-6, atol=1e-8)
    mask = pixel_mask_to_vector(bottom_half_unknown(32, 32), 3).expand_as(x)
    torch.testing.assert_close(on_cpu(acc.retrieve(x.to(ACCEL), mask=mask.to(ACCEL))),
                               cpu.retrieve(x, mask=mask), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(on_cpu(acc.retrieve(x.to(ACCEL) + 0.1)), cpu.retrieve(x + 0.1), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(on_cpu(acc.energy(x.to(ACCEL))), cpu.energy(x), rtol=1e-7, atol=1e-12)


def test_pc_checkpoints_and_adam_move_between_devices(tmp_path, patches):
    x = patches[:8]
    acc = PCMemory(sizes=[16, 32, 3072], device=ACCEL, epochs=3, seed=1)
    acc.fit(x.to(ACCEL), progress=False)
    path = tmp_path / "pc.safetensors"
    acc.save(path)
    cpu = PCMemory.load(path, device="cpu")
    torch.testing.assert_close(cpu.retrieve(x), on_cpu(acc.retrieve(x.to(ACCEL))), rtol=1e-4, atol=1e-5)
    back = cpu.to(ACCEL)  # Adam's moments go with the weights
    state = back._opt.state[back.weights[0]]
    assert state["exp_avg"].device == back.weights[0].device
    assert len(back.fit(x.to(ACCEL), epochs=2, progress=False)) == 2


# --- universal Hopfield ------------------------------------------------------------------------


@pytest.mark.parametrize("sim, sep, kw", [
    ("dot", "softmax", {"beta": 0.05}), ("cosine", "max", {}), ("euclidean", "polynomial", {"n": 3.0}),
    ("manhattan", "softmax", {"beta": 1.0}), ("dot", "identity", {}),
])
def test_hopfield_retrieval_equals_the_cpu(sim, sep, kw, fashion_vectors):
    keys, cue = fashion_vectors[:300].double(), fashion_vectors[:8].double() + 0.1
    cpu = UniversalHopfield(sim, sep, device="cpu", dtype=torch.float64, **kw)
    acc = UniversalHopfield(sim, sep, device=ACCEL, dtype=torch.float64, **kw)
    cpu.store(keys)
    acc.store(keys.to(ACCEL))
    torch.testing.assert_close(on_cpu(acc.retrieve(cue.to(ACCEL))), cpu.retrieve(cue), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(on_cpu(acc.energy(cue.to(ACCEL))), cpu.energy(cue), rtol=1e-7, atol=1e-9)
    _, rows = acc.search(cue.to(ACCEL), k=3)
    assert torch.equal(on_cpu(rows), cpu.search(cue, k=3)[1])


# --- PC on graphs and Z-IL ---------------------------------------------------------------------


def test_pcgraph_training_follows_the_cpu_in_float64():
    images, labels = digits()
    data = torch.cat([flatten(images), F.one_hot(labels, 10).float()], dim=1)[:200].double()
    args = {"weight_lr": 3e-3, "batch_size": 50, "seed": 0, "dtype": torch.float64}
    cpu = PCGraph(74, 32, "fully_connected", device="cpu", **args)
    acc = PCGraph(74, 32, "fully_connected", device=ACCEL, **args)
    cpu.fit(data, epochs=2, progress=False)
    acc.fit(data.to(ACCEL), epochs=2, progress=False)
    torch.testing.assert_close(on_cpu(acc.weights), cpu.weights, rtol=1e-6, atol=1e-9)
    mask = torch.zeros(20, 74, dtype=torch.bool)
    mask[:, :64] = True
    torch.testing.assert_close(on_cpu(acc.retrieve(data[:20].to(ACCEL), mask.to(ACCEL), steps=30)),
                               cpu.retrieve(data[:20], mask, steps=30), rtol=1e-6, atol=1e-9)


def test_zil_equals_backprop_on_the_accelerator(fashion_vectors):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 64), nn.Tanh(), nn.Linear(64, 10)).double().to(ACCEL)
    x, y = fashion_vectors[:32].double().to(ACCEL), torch.randn(32, 10, dtype=torch.float64, device=ACCEL)
    zil = zil_gradients(model, x, y)
    model.zero_grad()
    (0.5 * (model(x) - y).square().sum()).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(zil[name], p.grad, rtol=1e-9, atol=1e-12)


# --- the service on the accelerator ------------------------------------------------------------


def test_service_trains_and_recalls_on_the_accelerator(make_client, fashion):
    client = make_client(device=ACCEL)
    assert client.get("/v1/info").json()["device"].startswith(torch.device(ACCEL).type)
    for name, kind, config in [("h", "hopfield", {}), ("p", "pc", {"sizes": [64, 256, 784], "epochs": 60})]:
        r = client.post("/v1/memories", json={"name": name, "kind": kind, "shape": [1, 28, 28], "config": config})
        assert r.status_code == 201, r.json()
        r = client.post(f"/v1/memories/{name}/patterns", json={"patterns": [
            {"id": f"f{i}", "image": png_b64(img)} for i, img in enumerate(fashion[:8])]})
        assert r.status_code == 201, r.json()
    job = wait_job(client, client.post("/v1/memories/p/train", json={}).json()["id"])
    assert job["status"] == "succeeded", job
    vectors = flatten(fashion[:8])
    for name in ("h", "p"):
        known = [True] * 392 + [False] * 392
        hits = [client.post(f"/v1/memories/{name}/retrieve", json={"vector": v.tolist(), "mask": known})
                .json()["matches"][0]["id"] for v in vectors]
        assert hits == [f"f{i}" for i in range(8)], (name, hits)
