"""Which modules write which table: "each table written from one place" (issue 9), checked.

    python scripts/table_writers.py [PACKAGE_DIR]      (default: src/crmflow beside this script)

prints each table of `store/schema.py` with the modules that write it, and exits with status 1
when a table has no writer or more than one (tests/unit/test_table_writers.py runs it).

A module writes a table when, outside its docstrings and comments, it

- calls `insert`, `update` or `delete` on the table (`enrollments.insert()`);
- hands the table to a call whose name says it writes (`sa.update(t)`, `postgresql.insert(t)`,
  `_insert_for(conn, t)`, `(postgresql.insert if pg else sqlite.insert)(t)`);
- holds raw SQL that writes it (`insert into t`, `insert or ignore into t`, `update t set`,
  `delete from t`, `truncate t`), in any case, in an f-string too.

Only the schema's table objects count (imported from `crmflow.store.schema`): a dict that
happens to be called `records` is not a table. The modules of a package under `store/` count as
one place, the package (a table group split into modules, as `store/enrollments/`). Migrations are
left out: they rewrite the schema's history, not the data the application writes.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["main", "tables", "writers"]

_SCHEMA_MODULE = "crmflow.store.schema"
_WRITE_METHODS = {"insert", "update", "delete"}
_WRITE_CALL = re.compile(r"insert|update|delete|upsert", re.IGNORECASE)
_RAW_WRITE = re.compile(
    r"""\b(?:
        insert\s+(?:or\s+\w+\s+)?into\s+"?(?P<inserted>\w+)
      | update\s+"?(?P<updated>\w+)"?\s+set\b
      | delete\s+from\s+"?(?P<deleted>\w+)
      | truncate\s+(?:table\s+)?"?(?P<truncated>\w+)
    )""",
    re.IGNORECASE | re.VERBOSE,
)


def tables(package: Path) -> dict[str, str]:
    """The tables `store/schema.py` defines: Python name -> SQL name (`x = sa.Table("x", ...)`)."""
    tree = ast.parse((package / "store" / "schema.py").read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        if _name(call.func) != "Table" or not call.args:
            continue
        first = call.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name):
                found[target.id] = first.value
    return found


def writers(package: Path) -> dict[str, set[str]]:
    """SQL table name -> the places that write it, each a path relative to `package` (a module,
    or `store/<group>/` for a table-group package). Every table of the schema is a key."""
    known = tables(package)
    out: dict[str, set[str]] = {name: set() for name in known.values()}
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if "migrations" in relative.parts or relative == Path("store/schema.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for table in _written(tree, known):
            out[table].add(_place(relative))
    return out


def _place(relative: Path) -> str:
    """Where a module belongs: itself, or its table-group package under `store/`."""
    parts = relative.parts
    if len(parts) > 2 and parts[0] == "store":
        return f"store/{parts[1]}/"
    return relative.as_posix()


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _written(tree: ast.Module, known: dict[str, str]) -> set[str]:
    """The SQL names of the tables the module `tree` writes (see the module's text)."""
    aliases, schema_modules = _schema_imports(tree, known)
    sql_names = set(known.values())

    def table_of(node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return aliases.get(node.id)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in schema_modules
        ):
            return known.get(node.attr)
        return None

    documentation = _documentation(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in _WRITE_METHODS:
                table = table_of(func.value)
                if table is not None:
                    found.add(table)
            if _says_it_writes(func):
                found.update(t for t in map(table_of, node.args) if t is not None)
        text = _sql_text(node, documentation)
        if text is not None:
            found.update(t for t in _raw_writes(text) if t in sql_names)
    return found


def _schema_imports(tree: ast.Module, known: dict[str, str]) -> tuple[dict[str, str], set[str]]:
    """(local name -> SQL name of each table imported from the schema, local names of the schema
    module itself)."""
    aliases: dict[str, str] = {}
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == _SCHEMA_MODULE:
            for alias in node.names:
                if alias.name in known:
                    aliases[alias.asname or alias.name] = known[alias.name]
        elif isinstance(node, ast.ImportFrom) and node.module == "crmflow.store":
            modules.update(a.asname or a.name for a in node.names if a.name == "schema")
        elif isinstance(node, ast.Import):
            modules.update(a.asname for a in node.names if a.name == _SCHEMA_MODULE and a.asname)
    return aliases, modules


def _says_it_writes(func: ast.expr) -> bool:
    """The callee's own name (or a name in the expression that picks it) says it writes."""
    names = (_name(n) for n in ast.walk(func) if isinstance(n, ast.Name | ast.Attribute))
    return any(_WRITE_CALL.search(name) for name in names)


def _documentation(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are statements of their own: docstrings (of the
    module, classes, functions, attributes), never run as SQL."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _sql_text(node: ast.AST, documentation: set[int]) -> str | None:
    """The text of a string constant, or of an f-string (its holes as `{}`), that is not
    documentation."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return None if id(node) in documentation else node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            p.value if isinstance(p, ast.Constant) and isinstance(p.value, str) else "{}"
            for p in node.values
        )
    return None


def _raw_writes(text: str) -> Iterator[str]:
    for match in _RAW_WRITE.finditer(text):
        yield next(name for name in match.groups() if name is not None)


def main(argv: list[str]) -> int:
    package = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "src" / "crmflow"
    found = writers(package)
    wrong = 0
    for table, places in found.items():
        shown = ", ".join(f"{package}/{place}" for place in sorted(places))
        if len(places) == 1:
            print(f"{table}: {shown}")
        else:
            wrong += 1
            print(f"{table}: {shown or '(no writer found)'}  <- should be written from one place")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
