"""Power-limit tuning against Zeus's published measurements of real cards (tests/data/zeus_traces).

Each row set of a trace (one job's epoch time and average power at each limit measured on a V100,
A40, RTX 6000 or P100) is replayed through a fake card (tests/fake_gpu_trace.py) while the real
`Power`, the run's real Zeus monitor and Zeus's real selectors choose. The expectation is
the trace's optimum among the limits the card supports (and the trace measured), computed from
the CSV by each selector's definition, not by Zeus's code.
"""

from __future__ import annotations

import logging
import statistics

import pytest
from fake_gpu_trace import CARDS, TraceGPU, replay, row_sets, spacing_W, trace_optimum
from test_power_limit import (  # noqa: F401 - the autouse fixtures apply here too
    LOGGER,
    TUNE,
    _run,
    atexit_guard,
    real_tuning_on_the_fake_gpu,
)

from wattwise.methods.power.callback import Power
from wattwise.methods.power.plan import limits_W

SELECTORS = ("energy", "time", "zeus_cost", "max_slowdown")
FAST_SETS_PER_CARD = 4  # the first few row sets of each card in the fast test; all of them in the slow one


def _tuner(selector: str, rows, **kwargs) -> Power:  # noqa: ANN001
    settings = {"wait_steps": 1, "warmup_steps": 1, "profile_steps": 4, "blocks": 2, **kwargs}
    return Power(selector=selector, pl_step_W=spacing_W(rows), **settings)


def _misses(card: str, keys) -> list[str]:  # noqa: ANN001
    """Every (row set, selector) whose replay did not end tuned at the trace's optimum."""
    misses = []
    for key in keys:
        rows = row_sets(card)[key]
        # the grid is the card's whole range on the trace's own spacing: exactly the measured limits
        assert limits_W((min(rows) * 1000, max(rows) * 1000), spacing_W(rows)) == sorted(rows, reverse=True)
        for selector in SELECTORS:
            gpu = TraceGPU(rows)
            tuner = _tuner(selector, rows)
            replay(tuner, gpu)
            want = trace_optimum(rows, selector)
            if tuner.status != "tuned" or tuner.chosen_limit_W != want or gpu.limit_W != max(rows):
                misses.append(
                    f"{card} {key} {selector}: {tuner.status} {tuner.chosen_limit_W} W, want {want} W"
                )
    return misses


@pytest.mark.parametrize("card", CARDS)
def test_every_selector_ends_at_the_traces_optimum_on_each_card(card):
    keys = list(row_sets(card))[:FAST_SETS_PER_CARD]
    assert _misses(card, keys) == []


@pytest.mark.slow
@pytest.mark.parametrize("card", CARDS)
def test_every_selector_ends_at_the_traces_optimum_in_every_row_set(card):
    keys = list(row_sets(card))
    assert len(keys) >= 45
    assert _misses(card, keys) == []


def test_rtx6000_tries_its_minimum_and_picks_it_where_the_trace_says_so():
    """The card is 100-260 W: a grid stepped down from 260 W by 25 W never reaches 100 W."""
    sets = row_sets("rtx6000")
    at_min = [k for k, rows in sets.items() if min(rows) == 100 and trace_optimum(rows, "energy") == 100]
    assert len(at_min) == 6  # the row sets where the card's minimum is the energy optimum
    for key in at_min:
        rows = sets[key]
        tuner = Power(
            selector="energy", warmup_steps=1, profile_steps=4, blocks=2, pl_step_W=25
        )  # the default step
        replay(tuner, TraceGPU(rows))
        assert tuner.method_figures()["power/limits_tried_W"] == [260, 250, 225, 200, 175, 150, 125, 100]
        assert tuner.chosen_limit_W == 100, key


def test_a_real_fit_on_the_rtx6000_trace_with_validation_inside_every_profile(make_cfg):
    """val_check_interval=3 batches against 1 warm-up + 4 profile steps per limit: validation cuts every
    profile. The profile pauses and resumes around it, so the fit still ends tuned at the optimum."""
    key = ("cifar100", "shufflenetv2", 1024, "adadelta")
    rows = row_sets("rtx6000")[key]
    want = trace_optimum(rows, "energy", among=[260, 250, 200, 150, 100])
    gpu = TraceGPU(rows, limit_W=250)
    s = _run(
        make_cfg,
        gpu,
        "trainer.limit_train_batches=45",
        "trainer.limit_val_batches=1",
        "+trainer.val_check_interval=3",
        "callbacks.power.selector=energy",
        "callbacks.power.pl_step_W=50",
        "callbacks.power.warmup_steps=1",
        "callbacks.power.profile_steps=4",
    )
    assert s["status"] == "completed" and s["power/status"] == "tuned"
    assert s["power/limit_W"] == want and gpu.limit_mW == 250_000  # the original is back
    assert s["power/limits_tried_W"] == [260, 250, 200, 150, 100]  # every 50 W from the minimum, and 260
    assert all(m["steps"] == 4 for m in s["power/profile"].values())  # no validation batch was measured
    assert max(s["power/batches_at_W"], key=s["power/batches_at_W"].get) == str(want)


def test_validation_after_every_batch_steps_aside_in_one_line_and_leaves_the_card_alone(make_cfg, caplog):
    caplog.set_level(logging.WARNING)
    rows = row_sets("rtx6000")[("cifar100", "shufflenetv2", 1024, "adadelta")]
    gpu = TraceGPU(rows, limit_W=250)
    s = _run(
        make_cfg,
        gpu,
        "trainer.limit_train_batches=6",
        "trainer.limit_val_batches=1",
        "+trainer.val_check_interval=1",
        "callbacks.power.if_not_applicable=skip",
    )
    assert s["status"] == "completed" and s["power/status"] == "skipped"
    assert s["power/reason"] == "epoch_too_short" and "between validation runs" in s["power/skipped"]
    assert gpu.limit_history == [] and gpu.limit_W == 250  # it trained at the limit it found
    assert "power/limit_W" not in s  # a method that stepped aside reports no figures (the contract)
    power_warnings = [
        r for r in caplog.records if "power" in r.getMessage().lower() and r.levelno >= logging.WARNING
    ]
    assert len(power_warnings) == 1


def test_a_fit_that_ends_mid_profile_warns_once_and_reports_where_it_trained(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    rows = row_sets("v100")[next(iter(row_sets("v100")))]
    gpu = TraceGPU(rows, limit_W=200)
    tuner = _tuner("energy", rows, warmup_steps=2, profile_steps=6)
    replay(tuner, gpu, max_batches=20)  # 1 wait + 8 per limit: the fit ends at the third limit
    figures = tuner.method_figures()
    assert tuner.status == "incomplete" and gpu.limit_W == 200  # restored
    # the wait batch ran at the original 200 W, then 2 + 6 at each limit, 3 at 200 W when the fit ended
    assert figures["power/batches_at_W"] == {"250": 8, "225": 8, "200": 4}
    assert figures["power/limit_W"] == 250  # where most of its batches ran (ties: the higher)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "did not finish" in warnings[0] and "250" in warnings[0]


# ---- noise ----------------------------------------------------------------------------------------
def _excess(selector: str, noise: float, rho: float, seeds: range, **settings) -> list[float]:
    """Each replay's true cost at the chosen limit over the trace optimum's, minus 1 (0: the optimum)."""
    out = []
    for card in CARDS:
        for key in list(row_sets(card))[:3]:
            rows = row_sets(card)[key]

            def true_cost(limit: int, rows=rows) -> float:
                t, p = rows[limit]
                return t * p if selector == "energy" else 0.5 * t * p + 0.5 * max(rows) * t

            for seed in seeds:
                tuner = _tuner(selector, rows, warmup_steps=2, profile_steps=40, blocks=4, **settings)
                replay(tuner, TraceGPU(rows, noise=noise, rho=rho, seed=seed), max_batches=3000)
                assert tuner.status == "tuned"
                out.append(true_cost(tuner.chosen_limit_W) / true_cost(trace_optimum(rows, selector)) - 1)
    return out


@pytest.mark.parametrize("selector", ["energy", "zeus_cost"])
def test_with_3_percent_step_noise_the_choice_stays_within_3_percent_of_the_optimum(selector):
    excess = _excess(selector, noise=0.03, rho=0.0, seeds=range(3))
    assert max(excess) <= 0.03 and statistics.fmean(excess) <= 0.005, sorted(excess)[-5:]


def test_with_slow_drift_noise_the_profile_records_its_spread_and_the_choice_stays_within_8_percent():
    rows = row_sets("a40")[next(iter(row_sets("a40")))]
    tuner = _tuner("energy", rows, warmup_steps=2, profile_steps=40, blocks=4)
    replay(tuner, TraceGPU(rows, noise=0.03, rho=0.95, seed=1), max_batches=3000)
    assert all(m["energy_rsd"] > 0.005 and m["blocks"] >= 4 for m in tuner.profile.values())
    excess = _excess("energy", noise=0.03, rho=0.95, seeds=range(2))
    assert max(excess) <= 0.08, sorted(excess)[-5:]


# ---- DDP ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_two_cpu_processes_profile_their_own_cards_and_follow_one_decision(tmp_path):
    """Two gloo ranks, each with its own fake card running a different job: the ranks' energy is
    pooled, rank 0 decides, and both cards end the profile at the same limit and are restored."""
    import json

    from conftest import run_two_gloo_ranks
    from fake_gpu_trace import DDP_ROW_SETS

    run_two_gloo_ranks("fake_gpu_trace", tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    rows = [row_sets(card)[key] for card, key in DDP_ROW_SETS]
    own = [trace_optimum(r, "energy") for r in rows]
    job_energy = {lim: sum(r[lim][0] * r[lim][1] for r in rows) for lim in rows[0]}
    together = min(sorted(job_energy, reverse=True), key=job_energy.get)
    assert own[0] != together  # rank 0 alone would have chosen otherwise: the decision used both cards
    for r in ranks:
        assert r["status"] == "tuned" and r["chosen_W"] == together
        assert r["final_limit_mW"] == 200_000  # each card's own original limit is back
    # one schedule: both cards went through the same limits at the same batches
    assert ranks[0]["limit_history_mW"] == ranks[1]["limit_history_mW"]
    assert ranks[0]["limit_history_mW"][-2:] == [together * 1000, 200_000]
    assert ranks[0]["profile"] == ranks[1]["profile"]  # the pooled profile, on every rank


@pytest.mark.parametrize(("backend", "expected"), [("nccl", "cuda:1"), ("gloo", "cpu")])
def test_the_pooled_figures_live_where_the_backend_reduces(monkeypatch, backend, expected):
    """NCCL (Lightning's DDP on GPUs) reduces CUDA tensors only; gloo reduces CPU tensors."""
    import torch
    import torch.distributed as dist

    from wattwise.methods.shared.collective import collective_device

    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert str(collective_device()) == expected
