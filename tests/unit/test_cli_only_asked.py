"""`crmflow GROUP ...` builds only that group's commands (typer builds every command of the app
before parsing, a tenth of `flows validate`): which words keep which part of the app."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from crmflow.cli.main import _only_what_is_asked_for, app


def _kept(args: list[str]) -> list[str]:
    kept = _only_what_is_asked_for(app, args)
    return [str(g.name) for g in kept.registered_groups] + [
        str(c.name) for c in kept.registered_commands
    ]


@pytest.mark.parametrize(
    ("args", "kept"),
    [
        (["flows", "validate", "a.yaml"], ["flows"]),
        (["--as", "bob", "flows", "validate"], ["flows"]),
        (["--as=bob", "runs", "list"], ["runs"]),
        (["db", "upgrade"], ["db"]),
        (["simulate", "--help"], ["simulate"]),
        (["serve"], ["serve"]),
    ],
)
def test_a_named_group_or_command_is_built_alone(args: list[str], kept: list[str]) -> None:
    assert _kept(args) == kept
    assert len(app.registered_groups) > 10  # the app itself is left whole


@pytest.mark.parametrize(
    "args", [[], ["--help"], ["--as", "bob"], ["--as"], ["flow"], ["--show-completion"]]
)
def test_root_help_and_unknown_words_keep_everything(args: list[str]) -> None:
    assert _only_what_is_asked_for(app, args) is app


def test_completion_keeps_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_CRMFLOW_COMPLETE", "complete_bash")
    assert _only_what_is_asked_for(app, ["flows", "val"]) is app


def test_a_group_alone_says_what_it_says_in_the_whole_app() -> None:
    runner = CliRunner()
    for args in (["flows", "--help"], ["flows", "nosuch"], ["flows", "validate"]):
        alone = runner.invoke(_only_what_is_asked_for(app, args), args, prog_name="crmflow")
        whole = runner.invoke(app, args, prog_name="crmflow")
        assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output)
        assert "crmflow flows" in whole.output
