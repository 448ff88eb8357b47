"""How each kind of step runs: one module per step kind, plus what they share (scope, people)."""

from __future__ import annotations
