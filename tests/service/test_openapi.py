"""The OpenAPI document as generators read it: valid (openapi-spec-validator), every route of
the app in it and nothing else, one short snake_case `operationId` per operation, every answer
typed by a schema (no bare `object`), an `Error` whose `details` has `items`, examples that fit
their schemas, and the events stream's event names as service/events.py writes them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from service import events
from service.app import create_app
from service.openapi import openapi_document
from service.settings import ServiceSettings

# The HTML pages and their files: no API, so not in the document.
PAGES = {"/", "/docs", "/docs/assets", "/static", "/dashboard"}
METHODS = {"get", "post", "put", "patch", "delete"}
OPERATION_ID = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def _schemas(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON object under `node` that is a schema's `type: object` (with where it is)."""
    if isinstance(node, dict):
        if node.get("type") == "object" or (
            isinstance(node.get("type"), list) and "object" in node["type"]
        ):
            yield where, node
        for key, value in node.items():
            yield from _schemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _schemas(value, f"{where}/{index}")


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any error, with where it is


def test_every_route_is_in_the_document_and_nothing_else(settings: ServiceSettings) -> None:
    served: set[tuple[str, str]] = set()
    for route in create_app(settings).routes:
        if isinstance(route, Mount) or route.path in PAGES:  # type: ignore[attr-defined]
            assert isinstance(route, Route | Mount) and route.path in PAGES, route
            continue
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        served |= {(path, m.lower()) for m in route.methods or () if m != "HEAD"}
    documented = {(path, method) for path, method, _ in _operations(openapi_document())}
    assert served == documented, (served - documented, documented - served)
    # The ones the issue names, explicitly.
    for path in (
        "/api/projects/{project_id}/storyboards/events",
        "/metrics",
        "/media/{path}",
        "/api/worker/drain",
        "/api/jobs",
        "/api/queues",
        "/healthz",
        "/readyz",
    ):
        assert any(p == path for p, _ in documented), path


def test_operation_ids_are_short_snake_case_and_unique() -> None:
    ids = [op.get("operationId") for _, _, op in _operations(openapi_document())]
    assert all(isinstance(i, str) and OPERATION_ID.match(i) and len(i) <= 24 for i in ids), ids
    assert len(set(ids)) == len(ids), ids
    # What generated clients are named after: these stay.
    for name in ("create_project", "get_project", "get_status", "stream_events", "get_job"):
        assert name in ids


def test_every_answer_is_typed_and_every_error_is_the_error_schema() -> None:
    document = openapi_document()
    for path, method, operation in _operations(document):
        assert operation["responses"], (path, method)
        for status, response in operation["responses"].items():
            where = f"{method.upper()} {path} {status}"
            if status == "204":  # No Content: nothing to type
                assert "content" not in response, where
                continue
            assert response.get("content"), where
            for media_type, media in response["content"].items():
                assert "schema" in media, (where, media_type)
            if int(status) >= 400:
                assert list(response["content"]) == ["application/json"], where
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, where
    # No bare `object`: each says its fields, or that any are allowed (free-form JSON).
    for where, schema in _schemas(document):
        assert "properties" in schema or "additionalProperties" in schema, where


def test_the_error_schema_is_one_generators_keep() -> None:
    schemas = openapi_document()["components"]["schemas"]
    body = schemas["ErrorBody"]
    assert set(body["required"]) == {"code", "message", "details"}
    # Without `items` openapi-python-client drops every error answer.
    assert body["properties"]["details"]["items"] == {"$ref": "#/components/schemas/ErrorDetail"}
    assert schemas["Error"]["required"] == ["error"]


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> OAS31Validator:
    # The components ride along, so `#/components/schemas/...` resolves inside the schema.
    return OAS31Validator({**schema, "components": document["components"]})


def test_every_example_fits_its_schema() -> None:
    document = openapi_document()
    checked = 0
    for schema in document["components"]["schemas"].values():
        for example in schema.get("examples", []):
            _validator(document, schema).validate(example)
            checked += 1
    for _path, _method, operation in _operations(document):
        bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
        for body in bodies:
            for media_type, media in body.get("content", {}).items():
                if "example" in media and media_type == "application/json":
                    _validator(document, media["schema"]).validate(media["example"])
                    checked += 1
        for parameter in operation.get("parameters", []):
            if "example" in parameter:
                _validator(document, parameter["schema"]).validate(parameter["example"])
                checked += 1
    assert checked >= 20, checked


def test_the_events_stream_is_described_with_the_events_it_sends() -> None:
    document = openapi_document()
    operation = document["paths"]["/api/projects/{project_id}/storyboards/events"]["get"]
    media = operation["responses"]["200"]["content"]["text/event-stream"]
    assert media["x-itemSchema"] == {"$ref": "#/components/schemas/StreamEvent"}
    stream = document["components"]["schemas"]["StreamEvent"]
    described = set(stream["discriminator"]["mapping"])
    # The names events.py writes (`sse("name", ...)`): a renamed or new event shows here.
    sent = set(re.findall(r'\bsse\(\s*"(\w+)"', Path(events.__file__).read_text()))
    assert sent and described == sent, (described, sent)
    for event, target in stream["discriminator"]["mapping"].items():
        schema = document["components"]["schemas"][target.rsplit("/", 1)[1]]
        assert schema["properties"]["event"] == {"type": "string", "const": event}
        assert "data" in schema["required"]


async def test_the_served_document_is_this_one(client: httpx.AsyncClient) -> None:
    served = await client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == openapi_document()
