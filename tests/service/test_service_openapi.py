"""The OpenAPI document describes every endpoint, with examples; /metrics speaks Prometheus."""

from __future__ import annotations

from service_helpers import png_b64

RECALLS = ("retrieve", "complete", "lookup")  # the recall endpoints: JSON or multipart


def _resolve(doc, schema):
    ref = schema.get("$ref")
    return doc["components"]["schemas"][ref.split("/")[-1]] if ref else schema


def test_openapi_describes_every_endpoint_with_examples(client):
    doc = client.get("/openapi.json").json()
    expected = {
        ("get", "/livez"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/v1/info"),
        ("post", "/v1/memories"),
        ("get", "/v1/memories"),
        ("get", "/v1/memories/{name}"),
        ("delete", "/v1/memories/{name}"),
        ("post", "/v1/memories/{name}/patterns"),
        ("get", "/v1/memories/{name}/patterns"),
        ("get", "/v1/memories/{name}/patterns/{pattern_id}"),
        ("delete", "/v1/memories/{name}/patterns/{pattern_id}"),
        ("post", "/v1/memories/{name}/retrieve"),
        ("post", "/v1/memories/{name}/complete"),
        ("post", "/v1/memories/{name}/lookup"),
        ("post", "/v1/memories/{name}/train"),
        ("post", "/v1/memories/{name}/facts"),
        ("get", "/v1/memories/{name}/facts"),
        ("get", "/v1/memories/{name}/facts/{fact_id}"),
        ("delete", "/v1/memories/{name}/facts/{fact_id}"),
        ("post", "/v1/memories/{name}/query"),
        ("get", "/v1/memories/{name}/vocabulary"),
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/{job_id}"),
        ("delete", "/v1/jobs/{job_id}"),
        ("get", "/v1/demo"),
        ("post", "/v1/demo"),
    }
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert found == expected
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op.get("description") or op.get("summary"), where
            ok = [s for s in op["responses"] if s.startswith("2")]
            assert len(ok) == 1, where
            content = op["responses"][ok[0]].get("content", {})
            if ok[0] != "204":
                assert content, where
            if "application/json" in content:
                schema = _resolve(doc, content["application/json"]["schema"])
                assert schema.get("examples"), f"{where}: response without examples"
            if path.startswith("/v1"):
                writes = method != "get" and not path.endswith(
                    ("/retrieve", "/complete", "/lookup", "/query")
                )
                statuses = ("401", "403", "503") if writes else ("401",)
                for status in statuses:
                    err = op["responses"].get(status)
                    assert err and err["content"]["application/json"]["schema"]["$ref"].endswith(
                        "/ErrorResponse"
                    ), f"{where}: {status}"
            body = op.get("requestBody")
            if body and "application/json" in body["content"]:
                schema = _resolve(doc, body["content"]["application/json"]["schema"])
                assert schema.get("examples"), f"{where}: request body without examples"
    # Store, retrieve, complete and lookup take JSON or multipart; both described.
    for path in ("/v1/memories/{name}/patterns", *(f"/v1/memories/{{name}}/{r}" for r in RECALLS)):
        assert set(doc["paths"][path]["post"]["requestBody"]["content"]) == {
            "application/json",
            "multipart/form-data",
        }
    # Pictures are described where they are returned.
    assert "image/png" in doc["paths"]["/v1/memories/{name}/complete"]["post"]["responses"]["200"]["content"]
    assert (
        "image/png"
        in doc["paths"]["/v1/memories/{name}/patterns/{pattern_id}"]["get"]["responses"]["200"]["content"]
    )
    # Every $ref resolves.
    import json

    text = json.dumps(doc)
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in doc["components"]["schemas"], name


def test_metrics(client, fashion):
    client.post("/v1/memories", json={"name": "fashion", "kind": "hopfield", "shape": [1, 28, 28]})
    client.post(
        "/v1/memories/fashion/patterns", json={"patterns": [{"image": png_b64(fashion[i])} for i in range(7)]}
    )
    client.post("/v1/memories/fashion/retrieve", json={"image": png_b64(fashion[0])})
    client.get("/v1/memories/nope")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    assert 'ams_memory_patterns{kind="hopfield",memory="fashion"} 7.0' in lines
    assert "ams_memories 1.0" in lines and "ams_ready 1.0" in lines
    assert 'ams_requests_total{method="POST",route="/v1/memories/{name}/retrieve",status="200"} 1.0' in lines
    assert 'ams_requests_total{method="GET",route="/v1/memories/{name}",status="404"} 1.0' in lines
    assert 'ams_patterns_stored_total{kind="hopfield"} 7.0' in lines
    assert 'ams_recalls_total{endpoint="retrieve",kind="hopfield"} 1.0' in lines
    assert any(
        l.startswith('ams_request_duration_seconds_count{method="POST",route="/v1/memories/{name}/patterns"}')
        for l in lines
    )
    assert all(l.startswith(("#", "ams_")) for l in lines if l)
