"""Throttling of failed sign-ins, per username and per client address.

After `attempts` failures of one key (a username, or an address) within `window`, that key is
locked for `lockout`; each further failure after a lockout locks it again for twice as long (up to
`MAX_LOCKOUT_FACTOR` times `lockout`), until the key has been quiet for a whole window. While a
key is locked every sign-in with it is refused, even with the right password, without checking the
password: refusing must cost less than guessing. A success clears the user's key, not the
address's (an attacker with one account of their own must not reset the address they guess from).

The counts live in the memory of the process: several API processes each keep their own, so an
attacker spreading guesses over N processes gets N times the attempts. The table is bounded
(`max_keys`, least recently used evicted first), so spraying random usernames cannot grow memory
without bound. Time is passed in by the caller (`ctx.now()`), so tests move a frozen clock.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["MAX_LOCKOUT_FACTOR", "Lockout", "SignInThrottle"]

MAX_LOCKOUT_FACTOR = 64
DEFAULT_MAX_KEYS = 10_000
DEFAULT_WINDOW = timedelta(minutes=15)


@dataclass
class _Failures:
    count: int  # failures since the last lockout (or since the key was first seen)
    last_failed_at: datetime
    lockouts: int = 0  # lockouts in a row: each doubles the next one
    locked_until: datetime | None = None


@dataclass(frozen=True)
class Lockout:
    """Why a sign-in is refused: which key is locked, and for how many more seconds."""

    kind: str  # "user" or "address"
    value: str
    retry_after: int  # whole seconds, at least 1


class SignInThrottle:
    """Counts failed sign-ins per key; thread-safe, bounded, in memory."""

    def __init__(self, *, max_keys: int = DEFAULT_MAX_KEYS, window: timedelta = DEFAULT_WINDOW):
        self.max_keys = max_keys
        self.window = window
        self._keys: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, now: datetime, username: str, address: str | None) -> Lockout | None:
        """The longest lockout that applies to this sign-in, or None when it may go ahead."""
        found: Lockout | None = None
        with self._lock:
            for key in self._keys_of(username, address):
                entry = self._keys.get(key)
                if entry is None or entry.locked_until is None or entry.locked_until <= now:
                    continue
                seconds = max(1, math.ceil((entry.locked_until - now).total_seconds()))
                if found is None or seconds > found.retry_after:
                    found = Lockout(key[0], key[1], seconds)
        return found

    def failed(
        self,
        now: datetime,
        username: str,
        address: str | None,
        *,
        attempts: int,
        lockout: timedelta,
    ) -> Lockout | None:
        """Count a failed sign-in; the lockout it starts, if it reaches the limit of a key."""
        found: Lockout | None = None
        with self._lock:
            for key in self._keys_of(username, address):
                started = self._fail(key, now, max(1, attempts), lockout)
                if started is not None and (found is None or started > found.retry_after):
                    found = Lockout(key[0], key[1], started)
        return found

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._keys.pop(("user", username), None)

    @staticmethod
    def _keys_of(username: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("user", username)]
        if address:
            keys.append(("address", address))
        return keys

    def _fail(
        self, key: tuple[str, str], now: datetime, attempts: int, lockout: timedelta
    ) -> int | None:
        entry = self._keys.get(key)
        if entry is not None and self._forgotten(entry, now):
            entry = None
        if entry is None:
            entry = _Failures(count=0, last_failed_at=now)
            self._keys[key] = entry
            self._evict(now)
        self._keys.move_to_end(key)
        entry.count += 1
        entry.last_failed_at = now
        # After a first lockout, one more failure is enough to lock again (for longer).
        if entry.count < attempts and entry.lockouts == 0:
            return None
        factor = min(1 << min(entry.lockouts, 16), MAX_LOCKOUT_FACTOR)
        entry.lockouts += 1
        entry.count = 0
        entry.locked_until = now + lockout * factor
        return max(1, math.ceil((lockout * factor).total_seconds()))

    def _forgotten(self, entry: _Failures, now: datetime) -> bool:
        """Whether a key has been quiet long enough to start again from nothing."""
        quiet_since = entry.last_failed_at
        if entry.locked_until is not None:
            quiet_since = max(quiet_since, entry.locked_until)
        return now - quiet_since >= self.window

    def _evict(self, now: datetime) -> None:
        if len(self._keys) <= self.max_keys:
            return
        # Forgotten keys go first; past them, the least recently failed ones.
        for key in [k for k, e in self._keys.items() if self._forgotten(e, now)]:
            del self._keys[key]
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
