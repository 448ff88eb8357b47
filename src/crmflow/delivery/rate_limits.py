"""Rate limits per channel and per destination domain (CRMFLOW_RATE_LIMIT_EMAIL, _SMS, _WEBHOOK,
CRMFLOW_RATE_LIMIT_DOMAINS): each message takes a slot of each limit it falls under; one that
finds no free slot is not sent now but put back, due at the time its slot comes
(docs/delivery.md).

Each limit is a GCRA ("N per unit", bursts up to N): a key's theoretical arrival time `tat`
moves by unit/N for each message; a message may go at `tat - (unit - unit/N)`. A message
put back keeps the slot it was given (in this process), so the messages put back are spread
over the time the limit allows instead of all coming back at once, and each goes at its slot.

One `RateLimiter` is shared by all the dispatchers of a process (`shared_limiter`): their threads
keep to the limits exactly between them. Across processes each process keeps to its share,
the limit divided by CRMFLOW_RATE_LIMIT_PROCESSES (the number of dispatcher processes you run),
so that together they keep to it approximately.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import getaddresses
from typing import Any
from urllib.parse import urlsplit

from crmflow.settings import Settings, parse_domain_rates, parse_rate

__all__ = ["Rate", "RateLimiter", "limit_keys", "shared_limiter"]

_MAX_GRANTS = 100_000


@dataclass(frozen=True)
class Rate:
    """`count` messages per `seconds`."""

    count: float
    seconds: float

    @property
    def interval(self) -> float:
        return self.seconds / self.count

    @property
    def tolerance(self) -> float:  # a burst of up to `count` messages goes at once
        return self.seconds - self.interval


class RateLimiter:
    """The limits of the settings, as slots in time; thread-safe."""

    def __init__(self, settings: Settings) -> None:
        share = settings.rate_limit_processes
        self.rates: dict[str, Rate] = {}
        for kind in ("email", "sms", "webhook"):
            text = getattr(settings, f"rate_limit_{kind}")
            if text:
                count, seconds = parse_rate(text)
                self.rates[kind] = Rate(count / share, seconds)
        for domain, (count, seconds) in parse_domain_rates(settings.rate_limit_domains).items():
            self.rates[f"domain:{domain}"] = Rate(count / share, seconds)
        self._tat: dict[str, datetime] = {}
        self._granted: dict[int, datetime] = {}  # message put back -> its slot
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self.rates)

    def reserve(self, keys: Iterable[str], now: datetime, message: int | None = None) -> datetime:
        """The time the message of these limit keys may go: `now` when each limit has a free
        slot, else the first time they all have one. The slots are taken either way; a message
        put back comes again at its slot and goes on it (no second slot)."""
        limited = [(key, self.rates[key]) for key in keys if key in self.rates]
        if not limited:
            return now
        with self._lock:
            granted = self._granted.pop(message, None) if message is not None else None
            if granted is not None and granted <= now:
                return now
            go = now
            for key, rate in limited:
                tat = max(self._tat.get(key, now), now)
                go = max(go, tat - timedelta(seconds=rate.tolerance))
            for key, rate in limited:
                tat = max(self._tat.get(key, now), go)
                self._tat[key] = tat + timedelta(seconds=rate.interval)
            if message is not None and go > now:
                if len(self._granted) >= _MAX_GRANTS:  # those another process took: forgotten
                    old = now - timedelta(minutes=1)
                    self._granted = {m: t for m, t in self._granted.items() if t > old}
                self._granted[message] = go
        return go


def limit_keys(kind: str, payload: dict[str, Any]) -> list[str]:
    """The limits a message falls under: its channel's, and its destination domains' (an
    email's recipients', a webhook's host)."""
    keys = [kind]
    if kind == "email":
        addresses = [*payload.get("to", ()), *payload.get("cc", ()), *payload.get("bcc", ())]
        domains = {a.rpartition("@")[2].lower() for _, a in getaddresses(addresses) if "@" in a}
        keys += [f"domain:{d}" for d in sorted(domains)]
    elif kind == "webhook":
        host = urlsplit(str(payload.get("url", ""))).hostname
        if host:
            keys.append(f"domain:{host.lower()}")
    return keys


_shared: dict[tuple[Any, ...], RateLimiter] = {}
_shared_lock = threading.Lock()


def shared_limiter(settings: Settings) -> RateLimiter:
    """The process's limiter for these settings' limits (one for every dispatcher thread)."""
    key = (
        settings.rate_limit_email,
        settings.rate_limit_sms,
        settings.rate_limit_webhook,
        settings.rate_limit_domains,
        settings.rate_limit_processes,
    )
    with _shared_lock:
        if key not in _shared:
            _shared[key] = RateLimiter(settings)
        return _shared[key]
