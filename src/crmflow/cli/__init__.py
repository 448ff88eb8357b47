"""The `crmflow` command line (Typer). Each sub-command group lives in its own module."""

from __future__ import annotations

from crmflow.cli.main import app, main

__all__ = ["app", "main"]
