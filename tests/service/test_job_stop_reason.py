"""A finished job says why it ended (``stop_reason``): all epochs run, the energy reached, a
demo load done, or cancelled; an unfinished one says null."""

from __future__ import annotations

import torch
from service_helpers import wait_job


def _pc_memory(client, name: str, **config) -> None:
    body = {"name": name, "kind": "pc", "shape": [16], "config": {"sizes": [4, 8, 16], "seed": 0, **config}}
    assert client.post("/v1/memories", json=body).status_code == 201
    vectors = torch.rand(6, 16, generator=torch.Generator().manual_seed(0))
    patterns = [{"vector": v.tolist()} for v in vectors]
    assert client.post(f"/v1/memories/{name}/patterns", json={"patterns": patterns}).status_code == 201


def test_training_says_whether_it_ran_every_epoch_or_reached_the_energy(client) -> None:
    _pc_memory(client, "all-epochs", stop_energy=0.0)
    job = wait_job(client, client.post("/v1/memories/all-epochs/train", json={"epochs": 3}).json()["id"])
    assert (job["status"], job["stop_reason"], job["epoch"]) == ("succeeded", "epochs", 3)

    _pc_memory(client, "early", stop_energy=1e3, stop_anneal=2)  # any energy is low enough
    job = wait_job(client, client.post("/v1/memories/early/train", json={"epochs": 50}).json()["id"])
    assert (job["status"], job["stop_reason"]) == ("succeeded", "energy")
    assert job["epoch"] < 50


def test_a_cancelled_job_says_so(client) -> None:
    _pc_memory(client, "long", stop_energy=0.0)
    started = client.post("/v1/memories/long/train", json={"epochs": 100000}).json()
    assert started["stop_reason"] is None
    assert client.delete(f"/v1/jobs/{started['id']}").status_code in (200, 202)
    job = wait_job(client, started["id"])
    assert (job["status"], job["stop_reason"]) == ("cancelled", "cancelled")
