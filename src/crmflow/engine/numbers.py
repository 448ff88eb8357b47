"""Numbers as people type them and JSON stores them, read the one way everywhere (a web form, a
filter, a flow document, an import cell).

`str.isdigit()` is true of '²', '①' and '٣', which int() refuses or reads as another script's
digit, and int() refuses more than 4,300 digits: `whole_number` reads ASCII digits only, up to a
number of them the caller chooses. NaN and the infinities (what float() makes of 'nan', 'inf'
and '1e400') have no JSON form, and a stored value would come back as null: `not_finite` tells
them."""

from __future__ import annotations

import math

__all__ = ["not_finite", "whole_number"]


def whole_number(text: str, *, max_digits: int = 19) -> int | None:
    """The whole number `text` writes in ASCII digits (at most `max_digits` of them, spaces
    around allowed), or None."""
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= max_digits):
        return None
    return int(text)


def not_finite(value: object) -> bool:
    """Whether `value` is NaN or an infinity."""
    return isinstance(value, float) and not math.isfinite(value)
