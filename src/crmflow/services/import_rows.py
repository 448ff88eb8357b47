"""The rows of an import file, read as bytes and decoded row by row, so that one bad row (a byte
that is not UTF-8, a cell over the size limit, a line that is not JSON) is reported at its line
and rejected alone, while the rows around it are read on.

Line numbers are physical lines of the file, 1-based (a CSV header is line 1). A CSV row whose
quoted cells span several lines is reported at its first line; a message about a bad byte also
names the line of the byte itself.

Memory stays bounded whatever the file: lines are read in pieces of at most `PIECE_BYTES`, and
a row is held only up to its byte cap (what its cells may hold at `max_field_chars` each); past
that the rest of the row is skipped while its quotes are still followed, so that the next row
starts where it should.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from itertools import chain
from typing import IO, Any

import orjson

from crmflow.engine.recordtypes import RecordType, text_refusal
from crmflow.errors import InvalidInputError, Problem
from crmflow.store.records import EXTERNAL_ID_CHARS

__all__ = [
    "EXTERNAL_ID_COLUMN",
    "OWNER_COLUMN",
    "PIECE_BYTES",
    "Row",
    "csv_rows",
    "external_id_of",
    "guarded_cell",
    "jsonl_rows",
    "unguarded_cell",
]

OWNER_COLUMN = "owner"
# The id an existing CRM knows a record by (unless the record type has a field of that name).
EXTERNAL_ID_COLUMN = "external_id"
PIECE_BYTES = 1 << 20
LIMIT_HINT = "shorten the value, or raise the limit with CRMFLOW_MAX_FIELD_CHARS"
UTF8_HINT = "save the file as UTF-8 (in a spreadsheet: 'CSV UTF-8')"
BOM = b"\xef\xbb\xbf"

# What a reader yields per row: its first line, then its values or the problems that make it
# unreadable (values is None exactly when there are problems).
Row = tuple[int, dict[str, Any] | None, list[Problem]]

# Where a CSV row is, as far as the ends of rows are concerned (Python's csv module, excel
# dialect): at the start of a cell, inside an unquoted cell, inside a quoted cell, or just after
# a quote inside a quoted cell (which either closes the cell or, doubled, is a quote character).
_START, _UNQUOTED, _QUOTED, _QUOTE = range(4)


@dataclass(slots=True)
class _RawRow:
    first_line: int
    last_line: int
    data: bytes | None  # None when the row was longer than its cap (not kept)
    size: int
    open_quote: bool = False  # the file ended inside a quoted cell


def _pieces(stream: IO[Any]) -> Iterator[bytes]:
    """The stream in pieces, each ending at a newline or PIECE_BYTES long; text streams are
    encoded (a lone surrogate then fails to decode like any bad byte)."""
    readline = partial(stream.readline, PIECE_BYTES)
    first = readline()
    if isinstance(first, str):
        texts = chain([first.removeprefix("\ufeff")], iter(readline, ""))
        return (text.encode("utf-8", "surrogatepass") for text in texts)
    # Spreadsheets often start their CSV files with a byte-order mark.
    return chain([first.removeprefix(BOM)] if first else [], iter(readline, b""))


def _csv_state(piece: bytes, state: int) -> int:
    """The state after `piece` (a part of one physical line) starting in `state`.

    Only quotes matter: a quote opens a quoted cell at the start of a cell (after a comma, or at
    the start of the row), is a literal character elsewhere in an unquoted cell, and inside a
    quoted cell either closes it or, doubled, stands for one quote."""
    position, end = 0, len(piece)
    find = piece.find
    while True:
        if state == _QUOTED:
            quote = find(b'"', position)
            if quote < 0:
                return _QUOTED
            if quote + 1 == end:
                return _QUOTE  # closing or doubled: the next piece says
            if piece[quote + 1] == 0x22:
                position = quote + 2
                continue
            state, position = _UNQUOTED, quote + 1
        elif state == _QUOTE:
            if position < end and piece[position] == 0x22:
                state, position = _QUOTED, position + 1
                continue
            state = _UNQUOTED
        # Outside quotes, from `position` on.
        quote = find(b'"', position)
        if quote < 0:
            if piece.endswith(b"\n"):
                return _UNQUOTED  # the row ends here
            rest = piece[position:]
            if rest:
                state = _START if rest.endswith(b",") else _UNQUOTED
            return state
        at_cell_start = (quote == position and state == _START) or (
            quote > position and piece[quote - 1] == 0x2C
        )
        state = _QUOTED if at_cell_start else _UNQUOTED
        position = quote + 1


def _raw_rows(
    pieces: Iterator[bytes], cap: int, *, quoted: bool, line: int = 1
) -> Iterator[_RawRow]:
    """Rows of physical lines, the first at `line`; with `quoted` (CSV) a row goes on while a
    quoted cell is open."""
    first_line = line
    parts: list[bytes] = []
    size = 0
    kept = True
    state = _START
    for piece in pieces:
        if (
            not size
            and piece[-1:] == b"\n"
            and len(piece) <= cap
            and not (quoted and b'"' in piece)
        ):
            # Most rows: one whole line, with nothing to follow.
            yield _RawRow(line, line, piece, len(piece))
            line += 1
            first_line = line
            continue
        if quoted:
            state = _csv_state(piece, state)
        size += len(piece)
        if kept:
            if size > cap:
                kept = False
                parts = []  # the row is too long: let it go, follow it to its end
            else:
                parts.append(piece)
        if not piece.endswith(b"\n"):
            continue  # the line goes on in the next piece
        line += 1
        if state == _QUOTED:
            continue  # a newline inside a quoted cell
        yield _RawRow(first_line, line - 1, b"".join(parts) if kept else None, size)
        first_line, parts, size, kept, state = line, [], 0, True, _START
    if size:
        yield _RawRow(
            first_line,
            line,
            b"".join(parts) if kept else None,
            size,
            open_quote=state == _QUOTED,
        )


def _not_utf8(raw: _RawRow) -> Problem:
    """Where the first byte that is not UTF-8 is, in a row that failed to decode."""
    assert raw.data is not None
    try:
        raw.data.decode()
    except UnicodeDecodeError as exc:
        before = raw.data[: exc.start]
        line = raw.first_line + before.count(b"\n")
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        bad = raw.data[exc.start : exc.end].hex(" ")
        return Problem(
            "", f"byte {bad} at line {line}, byte {column} of that line, is not UTF-8", UTF8_HINT
        )
    return Problem("", "is not UTF-8", UTF8_HINT)


def _too_long(raw: _RawRow, cap: int, max_field_chars: int, cells: str) -> Problem:
    lines = (
        f"line {raw.first_line}"
        if raw.last_line == raw.first_line
        else f"lines {raw.first_line}-{raw.last_line}"
    )
    return Problem(
        "",
        f"the row ({lines}) is over {cap:,} bytes long, more than {cells} may hold at "
        f"{max_field_chars:,} characters each (CRMFLOW_MAX_FIELD_CHARS)",
        LIMIT_HINT,
    )


def _cell_too_long(path: str, length: int, max_field_chars: int) -> Problem:
    return Problem(
        path,
        f"is {length:,} characters long, over the limit of {max_field_chars:,} "
        "(CRMFLOW_MAX_FIELD_CHARS)",
        LIMIT_HINT,
    )


def _allow_csv_fields(chars: int) -> None:
    # The csv module refuses fields over a process-wide limit (128 KB by default) by stopping the
    # reader. Rows reach it already capped (and cells are checked against max_field_chars after),
    # so it is raised to the cap, never lowered: other readers only gain.
    if csv.field_size_limit() < chars:
        csv.field_size_limit(chars)


def csv_rows(
    stream: IO[Any], rtype: RecordType, source: str, max_field_chars: int
) -> Iterator[Row]:
    """The rows of a CSV file after its header (checked here: a bad header refuses the file)."""
    per_cell = 4 * max_field_chars + 3  # UTF-8 takes up to 4 bytes a character, plus quotes
    header_cap = (len(rtype.fields) + 1) * per_cell
    pieces = _pieces(stream)
    raw_header = next(_raw_rows(pieces, header_cap, quoted=True), None)
    if raw_header is None:
        return iter(())
    header = _csv_header(raw_header, rtype, source, header_cap, max_field_chars)
    width = len(header)
    cap = width * per_cell + 2
    _allow_csv_fields(cap)
    # The header was read with its own cap; the rows after it, from the same pieces, get theirs.
    raws = _raw_rows(pieces, cap, quoted=True, line=raw_header.last_line + 1)
    return _csv_cells(raws, header, cap, max_field_chars)


def _csv_header(
    raw: _RawRow, rtype: RecordType, source: str, cap: int, max_field_chars: int
) -> list[str]:
    where = f"the import file {source}"
    if raw.data is None:
        too_long = _too_long(raw, cap, max_field_chars, "a header")
        raise InvalidInputError(where, [replace(too_long, line=1)])
    try:
        text = raw.data.decode()
    except UnicodeDecodeError:
        # Every row would be read against an unreadable header: refuse the file.
        raise InvalidInputError(where, [replace(_not_utf8(raw), line=1)]) from None
    _allow_csv_fields(cap)
    try:
        header = [h.strip() for h in next(csv.reader((text,)), [])]
    except csv.Error as exc:
        raise InvalidInputError(
            where, [Problem("", f"the header cannot be read as CSV: {exc}", line=1)]
        ) from None
    problems = []
    seen: set[str] = set()
    for i, column in enumerate(header):
        if column in seen:
            problems.append(Problem(f"column {i + 1}", f"{column!r} appears twice", line=1))
        seen.add(column)
        if column not in (OWNER_COLUMN, EXTERNAL_ID_COLUMN) and rtype.field(column) is None:
            problems.append(
                Problem(
                    f"column {i + 1}",
                    f"{column!r} is not a field of record type {rtype.key!r}",
                    f"known fields: {', '.join(rtype.field_keys)}, and owner, external_id",
                    line=1,
                )
            )
    if problems:
        # Every row would fail the same way: refuse the file before writing anything.
        raise InvalidInputError(where, problems)
    return header


def _csv_cells(
    raws: Iterator[_RawRow], header: list[str], cap: int, max_field_chars: int
) -> Iterator[Row]:
    width = len(header)
    for raw in raws:
        first = raw.first_line
        if raw.data is None:
            yield first, None, [_too_long(raw, cap, max_field_chars, f"its {width} cells")]
            continue
        data = raw.data
        try:
            text = data.decode()
        except UnicodeDecodeError:
            yield first, None, [_not_utf8(raw)]
            continue
        if b'"' not in data:
            # Without quotes a row is its cells joined by commas: no need for the csv module.
            cells = text.rstrip("\r\n").split(",")
            if cells == [""]:
                continue  # a blank line
        elif raw.open_quote:
            yield (
                first,
                None,
                [
                    Problem(
                        "",
                        f"a quoted cell opened on line {first} is never closed before the end "
                        "of the file",
                        'close it with " (a quote inside a cell is written "")',
                    )
                ],
            )
            continue
        else:
            try:
                cells = next(csv.reader((text,)), [])
            except csv.Error as exc:
                yield first, None, [Problem("", f"cannot be read as CSV: {exc}")]
                continue
            if not cells:
                continue  # a blank line
        if len(cells) != width:
            yield first, None, [Problem("", f"has {len(cells)} columns, the header has {width}")]
            continue
        if len(text) > max_field_chars:
            too_long = [
                _cell_too_long(key, len(value), max_field_chars)
                for key, value in zip(header, cells, strict=True)
                if len(value) > max_field_chars
            ]
            if too_long:
                yield first, None, too_long
                continue
        # Empty cells are absent values; dropping them here spares the checker most of its work.
        values = {k: v for k, v in zip(header, cells, strict=True) if v}
        if "'" in text:
            values = {k: unguarded_cell(v) for k, v in values.items()}
        yield first, values, []


# A CSV cell that starts with one of these is run as a formula by spreadsheets (CSV injection:
# `=HYPERLINK(...)`, `=cmd|...`). An export writes such a text with a `'` before it, which
# spreadsheets show as text and do not run, and an import takes that `'` off again: a record
# exported and imported again is unchanged. A plain number (`-5`) runs nothing and is left as is.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_GUARDED = re.compile(r"'+[=+\-@\t\r]")


def guarded_cell(text: str) -> str:
    """`text` as an export writes it in a CSV cell: with a `'` before a text that a spreadsheet
    would run as a formula (and before one that already starts with quotes then such a sign, so
    that `unguarded_cell` gives back exactly `text`)."""
    if _FORMULA.match(text) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def unguarded_cell(text: str) -> str:
    """A CSV cell as an import reads it: the `'` `guarded_cell` put before a formula sign taken
    off (one; spreadsheets also write a text that starts with such a sign that way)."""
    return text[1:] if _GUARDED.match(text) else text


def jsonl_rows(stream: IO[Any], rtype: RecordType, max_field_chars: int) -> Iterator[Row]:
    """The rows of a JSONL file: one JSON object per line, blank lines skipped."""
    # JSON may escape a character in 6 bytes (\u0001); keys and punctuation take a little more.
    cap = (len(rtype.fields) + 1) * (6 * max_field_chars + 64)
    loads = orjson.loads
    for raw in _raw_rows(_pieces(stream), cap, quoted=False):
        line = raw.first_line
        if raw.data is None:
            yield line, None, [_too_long(raw, cap, max_field_chars, "its fields")]
            continue
        if not raw.data.strip():
            continue
        try:
            values = loads(raw.data)
        except orjson.JSONDecodeError as exc:
            try:
                raw.data.decode()
            except UnicodeDecodeError:
                yield line, None, [_not_utf8(raw)]
            else:
                yield line, None, [Problem("", f"is not valid JSON: {exc}")]
            continue
        if type(values) is not dict:
            yield line, None, [Problem("", "must be a JSON object of field: value")]
            continue
        too_long = [
            _cell_too_long(key, len(value), max_field_chars)
            for key, value in values.items()
            if type(value) is str and len(value) > max_field_chars
        ]
        if too_long:
            yield line, None, too_long
            continue
        yield line, values, []


def external_id_of(value: object) -> tuple[str | None, list[Problem]]:
    """An external id as a row or a change gives it (a text, or a whole number), checked:
    None when empty, and the problems that refuse it."""
    if value is None:
        return None, []
    if type(value) is int:
        value = str(value)
    if not isinstance(value, str):
        return None, [Problem(EXTERNAL_ID_COLUMN, "must be a text (or a whole number)")]
    value = value.strip()
    if len(value) > EXTERNAL_ID_CHARS:
        return None, [Problem(EXTERNAL_ID_COLUMN, f"is longer than {EXTERNAL_ID_CHARS} characters")]
    # A NUL or a lone surrogate: PostgreSQL cannot store it, and an id holding one names nothing.
    refused = text_refusal(value, EXTERNAL_ID_CHARS)
    if refused is not None:
        return None, [Problem(EXTERNAL_ID_COLUMN, refused)]
    return value or None, []
