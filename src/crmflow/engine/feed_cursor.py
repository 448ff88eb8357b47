"""How far the change feed's cursor may move over the change ids it read: the rule that makes the
feed read every change once, in order, although on PostgreSQL ids become visible in commit order,
not in id order. Pure; `services.triggers.change_feed` reads the ids, the cursor and the
snapshot, and writes what these rules return.

A gap state is (horizon, highest id seen), or NO_GAP: see `settle`.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["NO_GAP", "Gap", "gap_after_cut", "settle"]

# (xmax of the snapshot that first saw a gap, the highest change id that snapshot saw).
Gap = tuple[int, int]
NO_GAP: Gap = (0, 0)


def settle(
    ids: Sequence[int], position: int, gap: Gap, *, snapshot: tuple[int, int] | None
) -> tuple[int, Gap]:
    """How far the cursor may move over `ids` (read after `position`), and the gap state.

    Why: on PostgreSQL ids come from a sequence when a row is inserted, but become visible when
    its transaction commits, so id 41 may commit after id 42. A reader that moved its cursor past
    42 would never see 41. So the cursor stops at the first gap in the ids. A gap is either a
    transaction still in flight or one that rolled back (gone for good); to tell them apart,
    the first time a gap is seen we keep the xmax of that snapshot (every transaction that could
    hold a missing id has an xid below it: it drew the id before the higher id we saw was
    drawn, after its first write to the record) and the highest id seen. Once a later snapshot's
    xmin reaches that horizon, all those transactions have ended; a missing id up to the kept
    id that is still not visible then never will be, and the cursor moves past it. Nothing is
    ever skipped that could still commit, and no change is read twice, so no de-duplication is
    needed. The price: a gap behind a long transaction holds the feed until it ends.

    SQLite has one writer at a time and ids are given in commit order: a gap is a rollback.
    `gap` is (horizon, highest id) or NO_GAP; `snapshot` is (xmin, xmax), None on SQLite.
    """
    horizon, below = gap
    cursor = position
    stopped = False
    for change_id in ids:
        if change_id != cursor + 1 and snapshot is not None:
            passed = horizon > 0 and snapshot[0] >= horizon and change_id - 1 <= below
            if not passed:
                stopped = True
                break
        cursor = change_id
    if not stopped:
        return cursor, NO_GAP
    assert snapshot is not None
    if horizon > 0 and snapshot[0] < horizon:
        return cursor, gap  # still waiting for the transactions of the gap we know about
    return cursor, (snapshot[1], max(ids))


def gap_after_cut(handled_to: int, settled_to: int, gap_before: Gap, gap_after: Gap) -> Gap:
    """The gap state to keep when the cursor moves to `handled_to` instead of `settled_to` (the
    batch was cut by its time limit), `settle` having turned `gap_before` into `gap_after`.

    A gap that `settle` found beyond its stop is beyond the cursor's too (the same gap, the same
    horizon: `gap_after` stands). A gap it passed between the cursor and its stop was passed with
    the state it had before, which is kept, so that the next read passes it again."""
    if handled_to < settled_to and gap_after == NO_GAP:
        return gap_before
    return gap_after
