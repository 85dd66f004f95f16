"""A schema error's message names the field and the problem, not only "does not match the
schema": a user reading one line (curl, the `ams` command, the demo page's banner) learns
what to fix. The same message comes from the routes and from the recall fast path."""

from __future__ import annotations

import pytest
from service_helpers import error_code


@pytest.fixture(params=[True, False], ids=["fast-recall", "routes"])
def client(request, make_client):
    c = make_client(fast_recall=request.param)
    assert c.post("/v1/memories", json={"name": "vec", "kind": "hopfield", "shape": [4]}).status_code == 201
    return c


def _message(r, status: int, code: str) -> str:
    assert r.status_code == status and error_code(r) == code, r.text
    return r.json()["error"]["message"]


@pytest.mark.parametrize(
    "path, body, named",
    [
        ("/v1/memories/vec/retrieve", {"vector": "abc"}, "vector: Input should be a valid array"),
        ("/v1/memories/vec/retrieve", {"vector": [1, 0, 0, 1], "k": "two"}, "k: "),
        (
            "/v1/memories/vec/retrieve",
            {"vector": [1, 0, 0, 1], "include_vector": "maybe"},
            "include_vector: ",
        ),
        ("/v1/memories", {"name": "x", "shape": [4]}, "kind: Field required"),
        ("/v1/memories", {"name": "bad name", "kind": "hopfield", "shape": [4]}, "name: String should match"),
        ("/v1/memories/vec/patterns", {"patterns": [{"vector": [1, 2, "x", 4]}]}, "patterns[0].vector[2]: "),
    ],
)
def test_a_schema_error_names_the_field(client, path, body, named):
    message = _message(client.post(path, json=body), 422, "validation_error")
    assert message.startswith("the request does not match the API's schema: "), message
    assert named in message, message


def test_a_query_parameter_is_named_as_one(client):
    message = _message(client.get("/v1/memories/vec/patterns?limit=abc"), 422, "validation_error")
    assert "query parameter limit: Input should be a valid integer" in message, message


def test_many_problems_name_three_and_count_the_rest(client):
    body = {"name": "bad name", "kind": 3, "shape": "x", "text": "maybe", "config": 5}
    message = _message(client.post("/v1/memories", json=body), 422, "validation_error")
    assert "name: " in message and "kind: " in message and "shape: " in message, message
    assert "text: " not in message and message.endswith("(and 2 more)"), message


@pytest.mark.parametrize("path", ["/v1/memories/vec/retrieve", "/v1/memories"])
def test_invalid_json_says_where_the_parser_stopped(client, path):
    r = client.post(path, content=b'{"vector": [1, 0,', headers={"Content-Type": "application/json"})
    message = _message(r, 400, "invalid_json")
    assert message.startswith("the request body is not valid JSON: "), message
    assert "column 17" in message or "at character 17" in message, message  # pydantic's parser, or json's
