"""How far the change feed's cursor moves over the ids it read: gaps, horizons, SQLite (no
snapshot), and a batch cut short by its time limit (the pure engine, no database)."""

from __future__ import annotations

from crmflow.engine.feed_cursor import NO_GAP, gap_after_cut, settle


def test_without_a_gap_the_cursor_moves_to_the_last_id() -> None:
    assert settle([1, 2, 3], 0, NO_GAP, snapshot=None) == (3, NO_GAP)
    assert settle([6, 7], 5, NO_GAP, snapshot=(100, 105)) == (7, NO_GAP)
    assert settle([], 5, NO_GAP, snapshot=(100, 105)) == (5, NO_GAP)


def test_on_sqlite_a_gap_is_a_rollback_and_is_read_past() -> None:
    assert settle([1, 2, 4], 0, NO_GAP, snapshot=None) == (4, NO_GAP)
    assert settle([9], 2, NO_GAP, snapshot=None) == (9, NO_GAP)


def test_on_postgresql_the_cursor_stops_before_a_gap_and_keeps_the_snapshot_horizon() -> None:
    # 3 may still commit: stop at 2 and remember the snapshot's xmax and the highest id seen.
    assert settle([1, 2, 4], 0, NO_GAP, snapshot=(100, 105)) == (2, (105, 4))
    # A gap right after the position: the cursor does not move at all.
    assert settle([4, 5], 2, NO_GAP, snapshot=(100, 105)) == (2, (105, 5))


def test_the_gap_is_waited_for_until_the_transactions_of_its_time_are_over() -> None:
    # Transactions older than the horizon still running: keep waiting, the gap state kept.
    assert settle([4], 2, (105, 4), snapshot=(104, 110)) == (2, (105, 4))
    # All over and 3 still absent: it rolled back, read past it.
    assert settle([4, 5], 2, (105, 4), snapshot=(105, 110)) == (5, NO_GAP)
    # 3 committed meanwhile: no gap any more.
    assert settle([3, 4], 2, (105, 4), snapshot=(104, 110)) == (4, NO_GAP)


def test_a_gap_above_what_the_horizon_covers_waits_again() -> None:
    assert settle([4, 6], 2, (105, 4), snapshot=(105, 110)) == (4, (110, 6))


def test_a_cut_batch_keeps_the_gap_state_that_let_settle_pass_a_gap_not_reached_yet() -> None:
    # settle passed the gap at 3 (state (105, 4) -> none) and stopped at 5; the cursor, cut at
    # 2, is before that gap: the state that lets the next read pass it again is kept.
    assert gap_after_cut(2, 5, (105, 4), NO_GAP) == (105, 4)
    # A gap found beyond settle's stop is beyond the cut cursor too: the new state stands.
    assert gap_after_cut(2, 4, NO_GAP, (110, 6)) == (110, 6)
    # Not cut: whatever settle said.
    assert gap_after_cut(5, 5, (105, 4), NO_GAP) == NO_GAP
