"""Which record fields a template shows that may be empty, with nothing to show instead.

An empty field renders as empty text ("Hire  Popescu?"): the validator warns about each field
that the record type does not require and that a template prints without a fallback. A field is
covered where it is printed through `| default(...)`, inside `{% if record.field %}`, or in
`{{ record.field if record.field else ... }}`; a stored template also covers it with a
`defaults:` entry. Only what is printed (`{{ ... }}`) counts: a field tested or looped over is
not shown as it is.
"""

from __future__ import annotations

from collections.abc import Collection

from jinja2 import TemplateSyntaxError, nodes

from crmflow.engine.templates import parsed_tree

__all__ = ["DEFAULT_FILTERS", "empty_field_warning", "fields_shown_empty"]

DEFAULT_FILTERS = frozenset({"default", "d"})


def empty_field_warning(name: str, record_type: str, *, stored: bool = False) -> tuple[str, str]:
    """The warning's message and hint for field `name`, shown by a template where it may be
    empty (`stored`: a stored template, which also takes a `defaults:` entry)."""
    message = (
        f"record.{name} may be empty (the {record_type} record type does not require it) "
        "and then shows as empty text"
    )
    hint = f"write {{{{ record.{name} | default('...') }}}}"
    if stored:
        hint += f" or add {name}: ... under defaults:"
    return message, hint


def fields_shown_empty(text: str, optional: Collection[str]) -> list[str]:
    """The fields among `optional` (those the record type does not require) that `text` prints
    without a fallback, in the order they first appear; [] for a template that does not parse
    (its syntax error is reported on its own)."""
    try:
        tree = parsed_tree(text)
    except TemplateSyntaxError:
        return []
    found: list[str] = []
    _statements(tree.body, frozenset(), set(optional), found)
    return found


def _statements(
    body: list[nodes.Node], covered: frozenset[str], optional: set[str], found: list[str]
) -> None:
    for node in body:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if not isinstance(child, nodes.TemplateData):
                    _printed(child, covered, optional, found)
        elif isinstance(node, nodes.If):
            _statements(node.body, covered | _read(node.test), optional, found)
            for branch in node.elif_:
                _statements(branch.body, covered | _read(branch.test), optional, found)
            _statements(node.else_, covered, optional, found)
        else:
            for inner in node.iter_child_nodes():
                if isinstance(inner, nodes.Stmt | nodes.Output):
                    _statements([inner], covered, optional, found)


def _printed(
    node: nodes.Node, covered: frozenset[str], optional: set[str], found: list[str]
) -> None:
    if isinstance(node, nodes.Filter) and node.name in DEFAULT_FILTERS:
        return
    if isinstance(node, nodes.CondExpr):
        _printed(node.expr1, covered | _read(node.test), optional, found)
        if node.expr2 is not None:
            _printed(node.expr2, covered, optional, found)
        return
    field = _record_field(node)
    if field is not None:
        if field in optional and field not in covered and field not in found:
            found.append(field)
        return
    for child in node.iter_child_nodes():
        _printed(child, covered, optional, found)


def _read(test: nodes.Node) -> frozenset[str]:
    """The record fields an `if` tests: within its body they are known not to be empty."""
    fields = {_record_field(test)}
    fields |= {_record_field(n) for n in test.find_all((nodes.Getattr, nodes.Getitem))}
    return frozenset(f for f in fields if f is not None)


def _record_field(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr) and _is_record(node.node):
        return node.attr
    if (
        isinstance(node, nodes.Getitem)
        and _is_record(node.node)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.arg.value
    return None


def _is_record(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "record"
