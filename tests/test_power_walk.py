"""The profiling schedule's state machine (methods/power/walk.py): pure transitions, checked by hand."""

from __future__ import annotations

import dataclasses

import pytest

from wattwise.methods.power import walk as w

SCHEDULE = w.Schedule(warmup=2, profile=3, block=2)


def run(events, walk=None, answers=()):
    """Feed events; answer each Decide from `answers`; the effects in order, and the last walk."""
    walk = walk or w.start([300, 200], wait=1)
    answers, out = list(answers), []
    for event in events:
        walk, effects = w.advance(walk, event, SCHEDULE)
        out += effects
        while effects and isinstance(effects[-1], w.Decide):
            walk, effects = w.advance(walk, answers.pop(0), SCHEDULE)
            out += effects
    return walk, out


def test_a_round_waits_warms_up_measures_in_blocks_and_asks_for_a_decision():
    walk, effects = run([w.Event.BATCH] * 13, answers=[w.Answer(200)])
    assert effects == [
        w.SetLimit(300),  # batch 2 (batch 1 waits): the first warm-up batch
        w.Open("__wattwise_power_300W_1"),  # batch 4
        w.Close("__wattwise_power_300W_1", 300, 1, 2),
        w.Open("__wattwise_power_300W_2"),  # batch 6: a full block; the next one starts
        w.Close("__wattwise_power_300W_2", 300, 1, 1),
        w.SetLimit(200),  # batch 7: 3 measured, on to the next limit with this batch
        w.Open("__wattwise_power_200W_3"),
        w.Close("__wattwise_power_200W_3", 200, 1, 2),
        w.Open("__wattwise_power_200W_4"),
        w.Close("__wattwise_power_200W_4", 200, 1, 1),
        w.Decide(final=False),
        w.SetLimit(200),
    ]
    assert walk.phase == w.Done(200)
    assert w.advance(walk, w.Event.BATCH, SCHEDULE) == (walk, ())  # done: nothing more per batch


def test_a_pause_closes_the_window_and_costs_one_unmeasured_batch_at_the_same_limit():
    walk, _ = run([w.Event.BATCH] * 5)  # waiting, two warm-up batches, a window over one batch
    assert walk.phase == w.Measuring(300, 0, 1, "__wattwise_power_300W_1")
    walk, effects = w.advance(walk, w.Event.PAUSE, SCHEDULE)
    assert effects == (w.Close("__wattwise_power_300W_1", 300, 1, 2),)
    assert walk.phase == w.Warmup(300, 1, measured=2)
    walk, effects = run([w.Event.BATCH, w.Event.BATCH], walk)
    assert effects == [w.Open("__wattwise_power_300W_2")] and walk.phase.limit_W == 300


def test_close_candidates_are_measured_again_in_round_two_then_the_answer_is_final():
    walk, effects = run([w.Event.BATCH] * 12, answers=[w.Answer(None, (300, 200))])
    assert effects[-2:] == [w.Decide(final=False), w.SetLimit(300)]
    assert walk.round == 2 and walk.confirmed_W == (300, 200) and walk.phase == w.Warmup(300, 1)
    walk, effects = run([w.Event.BATCH] * 12, walk, answers=[w.Answer(300)])
    assert w.Decide(final=True) in effects and walk.phase == w.Done(300)
    assert {e.round for e in effects if isinstance(e, w.Close)} == {2}


def test_cancel_drops_the_open_window_without_a_sample():
    walk, _ = run([w.Event.BATCH] * 4)
    walk, effects = w.advance(walk, w.Event.CANCEL, SCHEDULE)
    assert effects == (w.Drop("__wattwise_power_300W_1"),)


def test_states_are_plain_frozen_data():
    walk = w.start([300], wait=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        walk.round = 2  # type: ignore[misc]
    assert w.advance(walk, w.Event.BATCH, SCHEDULE) == w.advance(walk, w.Event.BATCH, SCHEDULE)
