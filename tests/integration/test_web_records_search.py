"""The records search (/records?q=) is answered by the database, a page at a time: however many
records of the type there are and however many match, the page reads the same few statements
and at most a page of rows (plus one, to know there is a next page), never the type's records.
SQLite and PostgreSQL."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.services import imports
from crmflow.services.context import Actor, Context
from crmflow.store import queries as query_store
from crmflow.web import create_site
from crmflow.web.pages import records as record_pages
from tests.conftest import make_user
from tests.integration.test_web_flows import _sign_in

_ROW = re.compile(r'<a href="/records/(\d+)">')


@pytest.fixture
def ada(ctx: Context) -> Actor:
    return make_user(ctx, "ada", "admin")


def _contacts(ctx: Context, actor: Actor, count: int, start: int = 0) -> None:
    """`count` contacts; every third one has an address at acme.example, the others not."""
    lines = ["first_name,last_name,email"]
    lines += [
        f"P{i},Name{i},p{i}@{'acme' if i % 3 == 0 else 'globex'}.example"
        for i in range(start, start + count)
    ]
    body = io.BytesIO(("\n".join(lines) + "\n").encode())
    report = imports.import_records(ctx, actor, "contact", body, fmt="csv")
    assert report.imported == count, report.summary()


class Reads:
    """The statements a page runs against `records`, and the rows the search returned."""

    def __init__(self, ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        self.rows: list[int] = []
        real = query_store.matching_records

        def counted(*args: Any, **kwargs: Any) -> list[sa.Row[Any]]:
            found = real(*args, **kwargs)
            self.rows.append(len(found))
            return found

        monkeypatch.setattr(query_store, "matching_records", counted)
        sa.event.listen(ctx.engine, "before_cursor_execute", self._seen)
        self.engine = ctx.engine

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if re.search(r"\bFROM records\b", statement):
            self.statements.append(statement)

    def page(self, site: TestClient, path: str) -> tuple[list[int], str | None, list[str]]:
        self.statements.clear()
        self.rows.clear()
        text = site.get(path).text
        found = re.search(r'<a href="(/records\?[^"]+)" rel="next">', text)
        return (
            [int(i) for i in _ROW.findall(text)],
            found and found.group(1).replace("&amp;", "&"),
            list(self.statements),
        )

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)


@pytest.fixture
def reads(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    counter = Reads(ctx, monkeypatch)
    yield counter
    counter.close()


def test_a_search_reads_a_page_of_rows_whatever_the_number_of_records(
    ctx: Context, ada: Actor, reads: Reads
) -> None:
    size = record_pages.PAGE_SIZE
    _contacts(ctx, ada, 30)
    with TestClient(create_site(ctx), follow_redirects=False) as site:
        _sign_in(site, "ada")
        few_ids, few_next, few_statements = reads.page(site, "/records?type=contact&q=acme")
        assert len(few_ids) == 10 and few_next is None
        assert reads.rows == [10]

        _contacts(ctx, ada, 600, start=30)  # 210 at acme.example now, 630 contacts in all
        ids, next_page, statements = reads.page(site, "/records?type=contact&q=ACME")
        assert len(ids) == size and next_page is not None
        assert reads.rows == [size + 1]  # a page and one more, to know there is a next page
        # The same statements as with 30 records: none per record, each bounded by its LIMIT.
        assert len(statements) == len(few_statements)
        search = [s for s in statements if "LIKE" in s.upper()]
        assert len(search) == 1 and "LIMIT" in search[0].upper()

        # Paging goes on where the page stopped, with no record twice, to the last match.
        seen = list(ids)
        while next_page is not None:
            ids, next_page, _ = reads.page(site, next_page)
            assert max(reads.rows) <= size + 1
            seen += ids
        assert len(seen) == len(set(seen)) == 210
        assert seen == sorted(seen)
