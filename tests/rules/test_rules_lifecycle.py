"""The detection lifecycle: open, stay open, clear, cooldown, and stable dedup keys."""

from __future__ import annotations

import datetime as dt

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from careloop.durations import Duration
from rules.lifecycle import dedup_key, state_arrays, step_detections, transitions

NOW = np.datetime64("2026-06-01T12:00:00", "s")
NAT = np.datetime64("NaT", "s")
HOUR = np.timedelta64(3600, "s")


def test_each_transition_in_one_fleet_wide_step() -> None:
    # Devices: new hit, still open, recovers, cooling down, cooled down, idle.
    met = [True, True, False, True, True, False]
    open_since = np.array([NAT, NOW - 5 * HOUR, NOW - 5 * HOUR, NAT, NAT, NAT])
    cleared_at = np.array([NAT, NAT, NAT, NOW - HOUR, NOW - 3 * HOUR, NOW - HOUR])
    step = step_detections(
        met=met, open_since=open_since, cleared_at=cleared_at, now=NOW, cooldown=Duration.parse("2h")
    )
    assert step.opened.tolist() == [True, False, False, False, True, False]
    assert step.still_open.tolist() == [False, True, False, False, False, False]
    assert step.cleared.tolist() == [False, False, True, False, False, False]
    assert step.suppressed.tolist() == [False, False, False, True, False, False]
    assert step.open_since.tolist() == np.array([NOW, NOW - 5 * HOUR, NAT, NAT, NOW, NAT]).tolist()
    assert (
        step.cleared_at.tolist() == np.array([NAT, NAT, NOW, NOW - HOUR, NOW - 3 * HOUR, NOW - HOUR]).tolist()
    )
    assert step.is_open.tolist() == [True, True, False, False, True, False]


def test_cooldown_ends_exactly_at_cleared_at_plus_cooldown() -> None:
    def opens(cleared_hours_ago: float) -> bool:
        cleared = NOW - np.timedelta64(int(cleared_hours_ago * 3600), "s")
        step = step_detections(
            met=[True], open_since=[NAT], cleared_at=[cleared], now=NOW, cooldown=Duration(7200)
        )
        return bool(step.opened[0])

    assert [opens(1.99), opens(2), opens(3)] == [False, True, True]


def test_dedup_key_is_rule_device_and_opening_instant_in_utc() -> None:
    expected = "hood-fan-stall:RH-000123:2026-06-01T12:00:00Z"
    assert dedup_key("hood-fan-stall", "RH-000123", NOW) == expected
    shanghai = dt.timezone(dt.timedelta(hours=8))
    assert dedup_key("hood-fan-stall", "RH-000123", dt.datetime(2026, 6, 1, 20, tzinfo=shanghai)) == expected
    assert dedup_key("hood-fan-stall", "RH-000123", "2026-06-01T12:00:00.400Z") == expected


def test_transitions_name_what_opened_and_what_cleared_with_the_opening_key() -> None:
    open_since = np.array([NAT, NOW - HOUR])
    step = step_detections(
        met=[True, False], open_since=open_since, cleared_at=[NAT, NAT], now=NOW, cooldown=Duration(0)
    )
    changes = transitions(step, rule_id="r", device_ids=["A", "B"], previous_open_since=open_since)
    assert [(c.change, c.device_id, c.opened_at, c.at, c.dedup_key) for c in changes] == [
        ("opened", "A", "2026-06-01T12:00:00Z", "2026-06-01T12:00:00Z", "r:A:2026-06-01T12:00:00Z"),
        ("cleared", "B", "2026-06-01T11:00:00Z", "2026-06-01T12:00:00Z", "r:B:2026-06-01T11:00:00Z"),
    ]


def test_the_same_evaluation_replayed_gives_the_same_keys() -> None:
    def run() -> list[str]:
        step = step_detections(met=[True], open_since=[NAT], cleared_at=[NAT], now=NOW, cooldown=Duration(0))
        return [
            c.dedup_key for c in transitions(step, rule_id="r", device_ids=["A"], previous_open_since=[NAT])
        ]

    assert run() == run() == ["r:A:2026-06-01T12:00:00Z"]


def test_state_arrays_align_stored_detections_with_the_fleet() -> None:
    open_since, cleared_at = state_arrays(
        ["A", "B", "C"], open_since={"B": "2026-06-01T11:00:00Z"}, cleared_at={"C": dt.datetime(2026, 5, 1)}
    )
    assert open_since.astype(str).tolist() == ["NaT", "2026-06-01T11:00:00", "NaT"]
    assert cleared_at.astype(str).tolist() == ["NaT", "NaT", "2026-05-01T00:00:00"]


@given(
    met_sequence=st.lists(st.booleans(), min_size=1, max_size=40),
    cooldown_steps=st.integers(min_value=0, max_value=5),
)
def test_one_detection_at_a_time_and_none_opened_inside_a_cooldown(
    met_sequence: list[bool], cooldown_steps: int
) -> None:
    open_since, cleared_at = np.array([NAT]), np.array([NAT])
    last_cleared_step = None
    for index, met in enumerate(met_sequence):
        now = NOW + index * HOUR
        was_open = bool(~np.isnat(open_since[0]))
        step = step_detections(
            met=[met],
            open_since=open_since,
            cleared_at=cleared_at,
            now=now,
            cooldown=Duration(cooldown_steps * 3600),
        )
        outcomes = [step.opened[0], step.still_open[0], step.cleared[0], step.suppressed[0]]
        assert sum(map(bool, outcomes)) <= 1
        assert bool(step.is_open[0]) == (met and (was_open or bool(step.opened[0])))
        if step.opened[0]:
            assert not was_open
            assert last_cleared_step is None or index - last_cleared_step >= cooldown_steps
        if step.cleared[0]:
            last_cleared_step = index
        open_since, cleared_at = step.open_since, step.cleared_at
