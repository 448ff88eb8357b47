"""Reading a document file (a flow, a saved query, a record type) for the CLI and the services.

Bounded before parsing: at most `max_chars` characters are taken, and the file is read only that
far (4 bytes a character at most in UTF-8), so a huge file or a device never fills the memory.
The bytes are decoded strictly: a byte that is not UTF-8 is an error naming its offset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from crmflow.engine.source import MAX_DOCUMENT_CHARS, ParsedSource, decode_document, parse_source
from crmflow.errors import InvalidInputError, Problem

__all__ = ["parse_document_file", "read_document"]


def read_document(path: Path, *, what: str, max_chars: int = MAX_DOCUMENT_CHARS) -> str:
    """The text of the file at `path`; InvalidInputError naming `what` when it cannot be."""
    max_bytes = 4 * max_chars
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidInputError(
            what,
            [
                Problem(
                    "",
                    f"cannot be read: {exc.strerror or exc}",
                    "check the path and its permissions",
                    source=str(path),
                )
            ],
        ) from None
    if len(data) > max_bytes:
        raise InvalidInputError(
            what,
            [
                Problem(
                    "",
                    f"the file is larger than {max_bytes:,} bytes; a document may have at most "
                    f"{max_chars:,} characters",
                    "split it into smaller documents",
                    source=str(path),
                )
            ],
        )
    text = decode_document(data, source=str(path), what=what)
    if len(text) > max_chars:
        raise InvalidInputError(
            what,
            [
                Problem(
                    "",
                    f"the document has {len(text):,} characters, more than the {max_chars:,} "
                    "allowed",
                    "split it into smaller documents",
                    source=str(path),
                )
            ],
        )
    return text


def parse_document_file(path: Path, *, what: str, max_chars: int) -> ParsedSource:
    """The document in the file at `path`, read within the bounds above and parsed (JSON for a
    `.json` file, else YAML), its values mapped to their lines."""
    text = read_document(path, what=what, max_chars=max_chars)
    fmt: Literal["json"] | None = "json" if path.suffix.lower() == ".json" else None
    return parse_source(text, source=str(path), fmt=fmt, max_chars=max_chars)
