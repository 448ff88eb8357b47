"""The OpenAPI document describes every answer (issue 9): each operation's success answer names a
model (or, for a file, its media types), and each error status it declares has the error body.
A route added without a response model fails here, not in a client generated from the document."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmflow.api.app import create_app
from crmflow.services.context import Context
from crmflow.settings import Settings

# Answers that are files or redirects rather than JSON, with the media types they must declare.
_FILES = {
    ("get", "/api/records/{type_key}/export"): {"text/csv", "application/x-ndjson"},
    ("get", "/api/records/{record_id}/files/{field}"): {"application/octet-stream"},
}
# Models whose answer is free-form by nature: the flow documents' JSON Schema is itself a schema.
_FREE_FORM = {"FlowDocumentSchema"}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:

    url = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'crmflow.db'}"
    ctx = Context.from_settings(Settings(database_url=url))
    with TestClient(create_app(ctx)) as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 200
    doc: dict[str, Any] = answer.json()
    return doc


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    methods = {"get", "post", "put", "patch", "delete"}
    return [
        (method, path, op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if method in methods
    ]


def _names_a_model(doc: dict[str, Any], schema: dict[str, Any]) -> bool:
    """Whether a JSON schema is a named model with properties, or a list or map of them."""
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            return _names_a_model(doc, schema[key])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return all(_names_a_model(doc, s) for s in schema[key] if s.get("type") != "null")
    ref = schema.get("$ref")
    if not ref:
        return False
    name = ref.rsplit("/", 1)[-1]
    component = doc["components"]["schemas"][name]
    return name in _FREE_FORM or bool(
        component.get("properties") or component.get("enum") or component.get("anyOf")
    )


def test_every_success_answer_names_its_model(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert len(operations) > 40  # the whole API, not an empty document
    missing: list[str] = []
    for method, path, op in operations:
        for status, answer in op["responses"].items():
            if not status.startswith("2") or status == "204":
                continue
            content = answer.get("content", {})
            where = f"{method.upper()} {path} {status}"
            if (method, path) in _FILES:
                if set(content) != _FILES[(method, path)]:
                    missing.append(f"{where}: declares {sorted(content)}")
                continue
            schema = content.get("application/json", {}).get("schema", {})
            if not _names_a_model(document, schema):
                missing.append(f"{where}: {schema or 'no schema'}")
    assert not missing, "answers without a response model:\n" + "\n".join(missing)


def test_every_declared_error_has_the_error_body(document: dict[str, Any]) -> None:
    wrong: list[str] = []
    for method, path, op in _operations(document):
        for status, answer in op["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
            if not _names_a_model(document, schema):
                wrong.append(f"{method.upper()} {path} {status}: {schema or 'no schema'}")
    assert not wrong, "error answers without a body model:\n" + "\n".join(wrong)
