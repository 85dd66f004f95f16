"""The client keeps up with the service: every operation of the running service's OpenAPI
document has a method in both clients, the two clients have the same methods with the same
signatures, every property of the response schemas is a field of the client's models, and
``ams_client`` (with its command line) imports and works without torch or the service."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import textwrap

import pytest
from ams_client import AsyncClient, Client
from ams_client.models import PAGING, SCHEMAS

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def openapi(ams_server) -> dict:
    return ams_server.client().get("/openapi.json").json()


def routes_of(cls: type) -> dict[str, list[str]]:
    """Route ("GET /v1/memories/{name}") -> the public methods of ``cls`` that call it."""
    out: dict[str, list[str]] = {}
    for name, member in inspect.getmembers(cls):
        for route in getattr(member, "__ams_operations__", ()):
            if not name.startswith("_"):
                out.setdefault(route, []).append(name)
    return out


def test_every_operation_of_the_service_has_a_client_method(openapi) -> None:
    served = {f"{m.upper()} {p}" for p, ops in openapi["paths"].items() for m in ops if m in HTTP_METHODS}
    assert len(served) >= 21
    for cls in (Client, AsyncClient):
        covered = routes_of(cls)
        missing = sorted(served - set(covered))
        assert not missing, f"{cls.__name__} has no method for {missing}"
        unknown = sorted(set(covered) - served)
        assert not unknown, f"{cls.__name__} calls routes the service does not have: {unknown}"


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_") and name not in ("close", "aclose", "refresh_limits")
    }


def test_both_clients_have_the_same_methods_and_signatures() -> None:
    sync, asyn = public_methods(Client), public_methods(AsyncClient)
    assert sync.keys() == asyn.keys()
    for name in sync:
        assert sync[name].parameters == asyn[name].parameters, name
    for name in ("create_memory", "store", "retrieve", "complete", "lookup", "train", "job", "info", "ready"):
        assert name in sync
    params = sync["create_memory"].parameters
    assert list(params)[:6] == ["self", "name", "shape", "kind", "text", "config"]
    assert params["shape"].default is None  # relational memories have none
    assert list(sync["query"].parameters)[:6] == ["self", "name", "relation", "args", "k", "filter_known"]
    assert list(sync["store"].parameters)[:6] == ["self", "name", "patterns", "ids", "texts", "metadata"]
    assert list(sync["lookup"].parameters)[:5] == ["self", "name", "text", "image", "mask"]
    assert inspect.iscoroutinefunction(AsyncClient.retrieve) and not inspect.iscoroutinefunction(
        Client.retrieve
    )
    for listing in ("patterns", "facts"):
        assert inspect.isasyncgenfunction(getattr(AsyncClient, listing))
        assert inspect.isgeneratorfunction(getattr(Client, listing))
    assert Client.retrieve.__doc__ and Client.retrieve.__doc__ == AsyncClient.retrieve.__doc__


def response_schemas(openapi: dict) -> set[str]:
    """The schemas of every 2xx JSON answer, and those their properties refer to."""
    schemas = openapi["components"]["schemas"]
    found: set[str] = set()

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            ref = node.get("$ref")
            return [ref.rsplit("/", 1)[-1]] if ref else [r for v in node.values() for r in refs(v)]
        return [r for v in node for r in refs(v)] if isinstance(node, list) else []

    todo = [
        ref
        for ops in openapi["paths"].values()
        for op in ops.values()
        if isinstance(op, dict)
        for status, answer in op.get("responses", {}).items()
        if status.startswith("2")
        for ref in refs(answer.get("content", {}).get("application/json", {}))
    ]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += refs(schemas[name].get("properties", {}))
    return found


def test_models_have_every_field_of_the_response_schemas(openapi) -> None:
    schemas = openapi["components"]["schemas"]
    for schema_name, model in SCHEMAS.items():
        assert schema_name in schemas, f"the service has no schema {schema_name}"
        fields = {f.name for f in dataclasses.fields(model)}
        missing = sorted(set(schemas[schema_name]["properties"]) - fields - PAGING)
        assert not missing, f"{model.__name__} lacks {missing} of {schema_name}"
    # Every answer's schema is mirrored by a model, or is one of these wrappers that the client
    # unwraps (lists, pages, pairs; /livez and /readyz answer booleans): a new answer cannot go
    # unnoticed either.
    unwrapped = {
        "Health",
        "MemoryList",
        "PatternPage",
        "FactPage",
        "JobList",
        "DemoPresetList",
        "DemoStarted",
    }
    unmodelled = sorted(response_schemas(openapi) - set(SCHEMAS) - unwrapped)
    assert not unmodelled, f"answers without a model in ams_client.models.SCHEMAS: {unmodelled}"


def test_imports_and_works_without_torch_or_the_service(ams_server) -> None:
    """A fresh interpreter in which torch, the service and its libraries cannot be imported."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        BLOCKED = ("torch", "app", "memory_core", "fastapi", "pydantic", "starlette", "uvicorn")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {{name}}")
        sys.meta_path.insert(0, Block())
        import numpy as np
        import ams_client, ams_client.cli
        with ams_client.Client({ams_server.url!r}, api_key={ams_server.env["AMS_API_KEY"]!r}) as c:
            c.create_memory("no-torch", 3)
            c.store("no-torch", np.eye(3))
            assert c.retrieve("no-torch", [0.9, 0.1, 0], k=1).matches[0].id
            c.delete_memory("no-torch")
        assert ams_client.cli.main(["--url", {ams_server.url!r}, "health"]) == 0
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
