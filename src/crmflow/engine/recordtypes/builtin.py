"""The record types every installation has (contact, company, event, quote, invoice, order,
property), and the catalogue that adds an organisation's own types to them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crmflow.engine.recordtypes.fields import FieldDef, FieldType
from crmflow.engine.recordtypes.recordtype import RecordType

__all__ = ["BUILTIN_TYPES", "type_catalog"]


def _fields(*specs: tuple[Any, ...]) -> tuple[FieldDef, ...]:
    out = []
    for spec in specs:
        key, kind, *rest = spec
        options: dict[str, Any] = rest[0] if rest else {}
        out.append(
            FieldDef(
                key=key,
                type=FieldType(kind),
                label=options.get("label", key.replace("_", " ").capitalize()),
                required=options.get("required", False),
                choices=tuple(options.get("choices", ())),
                reference_type=options.get("ref"),
            )
        )
    return tuple(out)


def _builtin(key: str, name: str, *specs: tuple[Any, ...]) -> RecordType:
    return RecordType(key=key, name=name, fields=_fields(*specs), builtin=True)


BUILTIN_TYPES: dict[str, RecordType] = {
    t.key: t
    for t in (
        _builtin(
            "contact",
            "Contact",
            ("first_name", "text"),
            ("last_name", "text", {"required": True}),
            ("email", "email"),
            ("phone", "phone"),
            ("language", "choice", {"choices": ["en", "fr", "ro", "it", "de", "es"]}),
            ("status", "choice", {"choices": ["lead", "prospect", "client", "donor", "inactive"]}),
            ("client_since", "date"),
            ("birth_date", "date"),
            ("company", "reference", {"ref": "company"}),
            ("manager", "user", {"label": "Manager (for approvals)"}),
            ("last_donation_date", "date"),
            ("last_donation_amount", "number"),
            ("total_donations", "number"),
            ("newsletter", "bool"),
            # Quiet hours hold a message until they end in this zone (engine/actions/messaging).
            ("timezone", "text", {"label": "Time zone (e.g. Europe/Paris)"}),
        ),
        _builtin(
            "company",
            "Company",
            ("name", "text", {"required": True}),
            ("email", "email"),
            ("phone", "phone"),
            ("website", "text"),
            ("industry", "text"),
            ("status", "choice", {"choices": ["prospect", "client", "former_client"]}),
            ("client_since", "date"),
        ),
        _builtin(
            "event",
            "Event",
            ("title", "text", {"required": True}),
            ("start", "datetime", {"required": True}),
            ("end", "datetime"),
            ("location", "text"),
            (
                "status",
                "choice",
                {"choices": ["planned", "confirmed", "in_progress", "done", "cancelled"]},
            ),
            ("contact", "reference", {"ref": "contact"}),
            ("company", "reference", {"ref": "company"}),
        ),
        _builtin(
            "quote",
            "Quote",
            ("number", "text", {"required": True}),
            ("contact", "reference", {"ref": "contact"}),
            ("company", "reference", {"ref": "company"}),
            ("amount", "number"),
            ("status", "choice", {"choices": ["draft", "sent", "accepted", "refused", "expired"]}),
            ("valid_until", "date"),
        ),
        _builtin(
            "invoice",
            "Invoice",
            ("number", "text", {"required": True}),
            ("contact", "reference", {"ref": "contact"}),
            ("company", "reference", {"ref": "company"}),
            ("amount", "number"),
            ("status", "choice", {"choices": ["draft", "sent", "paid", "overdue", "cancelled"]}),
            ("due_date", "date"),
        ),
        _builtin(
            "order",
            "Order",
            ("number", "text", {"required": True}),
            ("kind", "choice", {"choices": ["sale", "service"]}),
            ("contact", "reference", {"ref": "contact"}),
            ("company", "reference", {"ref": "company"}),
            ("amount", "number"),
            (
                "status",
                "choice",
                {
                    "choices": [
                        "new",
                        "supplying",
                        "packing",
                        "delivered",
                        "diagnosis",
                        "repair",
                        "testing",
                        "done",
                        "cancelled",
                    ]
                },
            ),
            ("due_date", "date"),
        ),
        _builtin(
            "property",
            "Property",
            ("address", "text", {"required": True}),
            ("city", "text"),
            ("price", "number"),
            ("status", "choice", {"choices": ["available", "under_offer", "sold", "withdrawn"]}),
            ("seller", "reference", {"ref": "contact"}),
            ("buyer", "reference", {"ref": "contact"}),
            ("sale_date", "date"),
        ),
    )
}


def type_catalog(extra: Iterable[RecordType] = ()) -> dict[str, RecordType]:
    """The built-in types plus the organisation's own."""
    catalog = dict(BUILTIN_TYPES)
    catalog.update({t.key: t for t in extra})
    return catalog
