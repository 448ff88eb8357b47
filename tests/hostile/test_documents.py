"""Hostile flow documents: billion laughs and its variants, deep nesting, huge numbers, oversized
documents, merge keys, bytes that are not UTF-8, text no database stores (a NUL written `\\0`)
and values YAML would read as tags. Each is refused with a 422 (API) or exit 1 (CLI), a message
that says what was wrong and on which line (or byte), within a few seconds; the live server's
memory stays bounded and it keeps answering."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from crmflow.services.context import Actor, Context
from tests.acceptance.conftest import auth_headers
from tests.hostile.conftest import ADMIN_TOKEN, MEMBER_TOKEN, LiveServer

FLOW_HEAD = "schema_version: 1\nkey: hostile\nname: Hostile\nrecord_type: contact\n"
SECONDS = 5.0
STEP_KEY = "steps:\n  - key: a"
_VALID_REST = "triggers: [{type: record_created}]\nsteps: [{key: a}]\n"


@dataclass(frozen=True)
class Case:
    body: bytes
    says: str  # a part of the first problem's message
    line: int | None  # the line the problem names
    content_type: str = "application/yaml"
    # JSON bodies meet the API's JSON guard first: it names the path in the body, not a line.
    api_names_path: bool = False


def _laughs() -> bytes:
    # Ten levels of nine aliases each: 9**9 "lol"s, about 3 GB once expanded.
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        name, previous = chr(97 + level), chr(96 + level)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return ("\n".join(lines) + "\n").encode()


def _alias_chain() -> bytes:
    # Each anchor is a pair of the previous one: 2**40 values at the end of the chain.
    lines = [FLOW_HEAD.rstrip(), "x0: &x0 [lol, lol]"]
    lines += [f"x{i}: &x{i} [*x{i - 1}, *x{i - 1}]" for i in range(1, 40)]
    return ("\n".join(lines) + "\n").encode()


def _deep_block(levels: int) -> bytes:
    return (FLOW_HEAD + "".join("  " * i + f"k{i}:\n" for i in range(levels))).encode()


CASES: dict[str, Case] = {
    # 497 bytes, the document of the issue: refused at the alias that crosses the value cap.
    "billion laughs": Case(_laughs(), "the alias *d expands it past 20,000 values", 5),
    "many aliases in a list": Case(
        (FLOW_HEAD + "name_: &n x\nsteps: [" + ", ".join(["*n"] * 3000) + "]\n").encode(),
        "more than 1000 aliases",
        6,
    ),
    "nested alias chain": Case(_alias_chain(), "expands it past 20,000 values", 17),
    "alias to a huge scalar": Case(
        (
            FLOW_HEAD + "big: &big '" + "x" * 300_000 + "'\nsteps: [*big, *big, *big, *big]\n"
        ).encode(),
        "the alias *big expands the document past 1,000,000 characters",
        6,
    ),
    "deep block nesting": Case(_deep_block(500), "more than 64 levels deep", 69),
    "deep flow nesting": Case(
        (FLOW_HEAD + "steps: " + "[" * 50_000 + "]" * 50_000 + "\n").encode(),
        "more than 64 levels deep",
        5,
    ),
    "deep JSON nesting": Case(
        ('{"schema_version": 1,\n"steps": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001).encode(),
        "more than 64 levels deep",
        2,
        "application/json",
    ),
    "100,000-digit YAML number": Case(
        (FLOW_HEAD + "steps: " + "9" * 100_000 + "\n").encode(), "a number of 100,000", 5
    ),
    "100,000-digit JSON number": Case(
        ('{"schema_version": 1,\n "key": ' + "9" * 100_000 + "}").encode(),
        "a number of 100,000",
        2,
        "application/json",
        api_names_path=True,
    ),
    "2 MB flow-style list": Case(
        (FLOW_HEAD + "steps: [" + ",".join(["1"] * 1_000_000) + "]\n").encode(),
        "more than the 1,000,000 allowed",
        None,
    ),
    "900 KB flow-style list (under the size cap)": Case(
        (FLOW_HEAD + "steps: [" + ",".join(["1"] * 450_000) + "]\n").encode(),
        "it has more than 20,000 values",
        5,
    ),
    "merge key on a list": Case(
        (FLOW_HEAD + "base: &base [1, 2]\ntriggers:\n  <<: *base\n").encode(),
        "a merge key `<<` takes a mapping",
        7,
    ),
    "Latin-1 body": Case(
        (FLOW_HEAD + "description: caf\xe9\n").encode("latin-1"),
        f"byte {len(FLOW_HEAD) + len('description: caf')} (0xe9, line 5) is invalid",
        5,
    ),
    # PostgreSQL refused it with a traceback (`flows create`) or a 500; SQLite stored it.
    "a NUL in the name": Case(
        (FLOW_HEAD.replace("name: Hostile", 'name: "a\\0b"') + _VALID_REST).encode(),
        "the value at column 7 contains a NUL character (\\0) at character 2",
        3,
    ),
    # YAML reads `!record.newsletter` as a tag and `&&` as an anchor: `record.id > 0` was stored.
    "a condition read as a tag": Case(
        (
            FLOW_HEAD + "entry_condition: !record.newsletter && record.id > 0\n" + _VALID_REST
        ).encode(),
        "starts with !record.newsletter, which YAML reads as a tag",
        5,
    ),
    "a lone 0xff in the middle": Case(
        FLOW_HEAD.encode() + b"steps:\n  - key: a\xffb\n",
        f"byte {len(FLOW_HEAD) + len(STEP_KEY)} (0xff, line 6) is invalid",
        6,
    ),
}


def _check_problem(problem: dict[str, object], case: Case) -> None:
    assert case.says in str(problem["message"]), problem
    assert problem["hint"], problem  # and how to fix it
    if case.api_names_path:
        assert problem["path"], problem
    elif case.line is not None:
        assert problem["line"] == case.line, problem


@pytest.mark.parametrize("name", list(CASES))
def test_a_member_validating_a_hostile_document_gets_a_422_at_once(
    name: str, ctx: Context, admin: Actor, member: Actor, client: TestClient
) -> None:
    case = CASES[name]
    headers = {**auth_headers(ctx, admin, member.username), "Content-Type": case.content_type}
    started = time.monotonic()
    answer = client.post("/api/flows/validate", content=case.body, headers=headers)
    elapsed = time.monotonic() - started
    assert answer.status_code == 422, answer.text[:500]
    body = answer.json()
    assert body["message"].endswith("request body was refused"), body["message"]
    _check_problem(body["problems"][0], case)
    assert elapsed < SECONDS, f"{name}: answered in {elapsed:.1f} s"


@pytest.mark.parametrize(
    "name",
    [
        "billion laughs",
        "deep JSON nesting",
        "100,000-digit YAML number",
        "Latin-1 body",
        "a NUL in the name",
        "a condition read as a tag",
    ],
)
def test_an_admin_creating_a_hostile_flow_gets_a_422_and_nothing_is_saved(
    name: str, client: TestClient, as_admin: dict[str, str]
) -> None:
    case = CASES[name]
    started = time.monotonic()
    answer = client.post(
        "/api/flows", content=case.body, headers={**as_admin, "Content-Type": case.content_type}
    )
    assert time.monotonic() - started < SECONDS
    assert answer.status_code == 422, answer.text[:500]
    _check_problem(answer.json()["problems"][0], case)
    assert client.get("/api/flows", headers=as_admin).json() == []


def test_crmflow_flows_validate_refuses_every_hostile_file_with_its_line(
    crmflow: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """All the documents in one run (the command's start costs seconds on a busy machine): each
    is reported with its file, line and message, and the run takes little longer than the
    same command on one small valid file."""
    valid = tmp_path / "valid.yaml"
    valid.write_text(FLOW_HEAD + "triggers: [{type: record_created}]\nsteps: [{key: a}]\n")
    started = time.monotonic()
    crmflow("flows", "validate", str(valid))
    baseline = time.monotonic() - started
    paths = {}
    for index, (name, case) in enumerate(CASES.items()):
        suffix = ".json" if case.content_type == "application/json" else ".yaml"
        paths[name] = tmp_path / f"hostile-{index}{suffix}"
        paths[name].write_bytes(case.body)
    started = time.monotonic()
    done = crmflow("flows", "validate", *map(str, paths.values()), check_exit=1)
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    for name, case in CASES.items():
        path = paths[name]
        where = f"{path}:{case.line}: " if case.line is not None else f"{path}: "
        reported = [line for line in done.stdout.splitlines() if line.startswith(where)]
        assert reported, f"{name}: no problem reported at {where}\n{output[-3000:]}"
        assert case.says in reported[0], f"{name}: {reported[0]}"
        assert f"{path}: invalid (1 problem)" in done.stderr, name
    assert elapsed - baseline < len(CASES), f"{len(CASES)} documents took {elapsed:.1f} s"


MERGED = (
    FLOW_HEAD
    + """\
triggers:
  - type: record_created
steps:
  - key: first
    actions:
      - &note {type: history, message: "Hi {{ record.first_name }}"}
      - <<: *note
      - <<: *note
        message: Again
"""
)


def test_merge_keys_work_as_yaml_readers_expect_and_problems_keep_their_line(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    yaml = {**as_admin, "Content-Type": "application/yaml"}
    typo = MERGED + "      - <<: *note\n        mesage: typo\n"
    refused = client.post("/api/flows/validate", content=typo, headers=yaml)
    assert refused.status_code == 422
    problems = refused.json()["problems"]
    assert [(p["path"], p["line"]) for p in problems] == [("steps[0].actions[3].mesage", 15)]
    created = client.post("/api/flows", content=MERGED, headers=yaml)
    assert created.status_code == 201, created.text
    actions = created.json()["document"]["steps"][0]["actions"]
    hello = {"type": "history", "message": "Hi {{ record.first_name }}"}
    assert actions == [hello, hello, {"type": "history", "message": "Again"}]


def test_the_live_server_survives_the_billion_laughs_with_bounded_memory(
    live_server: LiveServer,
) -> None:
    """The issue's 497-byte document grew the server past 900 MB and never answered."""
    body = CASES["billion laughs"].body
    assert len(body) < 600
    with httpx.Client(base_url=live_server.base, timeout=30) as http:
        for name, token in (("billion laughs", MEMBER_TOKEN), ("nested alias chain", ADMIN_TOKEN)):
            case = CASES[name]
            started = time.monotonic()
            answer = http.post(
                "/api/flows/validate" if token == MEMBER_TOKEN else "/api/flows",
                content=case.body,
                headers={**live_server.headers(token), "Content-Type": case.content_type},
            )
            assert time.monotonic() - started < SECONDS
            assert answer.status_code == 422, answer.text[:500]
            _check_problem(answer.json()["problems"][0], case)
        assert http.get("/api/health").status_code in (200, 503)
        assert http.get("/api/flows", headers=live_server.headers(MEMBER_TOKEN)).status_code == 200
    assert live_server.alive()
    assert live_server.peak_rss_mb() < 400
