"""The joint search of batch size and GPU power limit (`callbacks.batch_size.joint_power`).

Real fits with `+optim=[batch_size,power]` on the fake GPU Zeus sees (tests/fake_gpu_power.py),
with the finder's steps replaced by a model whose cost per sample depends on both the batch size
and the limit (tests/fake_joint_model.py). Each selector's choice is checked against the pair the
model makes optimal, computed here from the model's formulas; the card is checked to have trained
at that limit and to end the fit at its original one, with the tuner not profiling on its own.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fake_gpu_power import PowerGPU, install_power_gpu
from fake_joint_model import BUILT, MODEL
from test_power_limit import (  # noqa: F401 - the autouse fixtures apply here too
    ORIGINAL_mW,
    atexit_guard,
    real_tuning_on_the_fake_gpu,
)

from wattwise.methods.batch_size.callback import BatchSize
from wattwise.methods.power.callback import Power
from wattwise.methods.power.plan import limits_W
from wattwise.train import train
from wattwise.utils.errors import ConfigError

SIZES = [16, 32, 64, 128]
LIMITS = limits_W((100_000, 300_000), 50)  # the tuner's grid on the fake GPU: 300, 250, ..., 100 W
MAX_W = 300
ORIGINAL_W = ORIGINAL_mW // 1000  # 275: off the grid, so a restore is unambiguous
TRAIN_BATCHES = 4
FINDER_LOGGER = "wattwise.methods.batch_size.callback"
POWER_LOGGER = "wattwise.methods.power.callback"
JOINT = [
    "energy.gpu_index=0",  # measure fake GPU 0 while the trainer runs on the CPU
    "callbacks.batch_size.joint_power=true",
    f"callbacks.batch_size.candidates=[{','.join(map(str, SIZES))}]",
    "callbacks.batch_size.min_steps_per_epoch=1",
    "callbacks.batch_size.profile_dir=null",
    "+callbacks.batch_size.measure._target_=fake_joint_model.JointMeasure",
    "data.batch_size=16",
    f"trainer.limit_train_batches={TRAIN_BATCHES}",
    "+callbacks.gpu_model._target_=fake_gpu_power.StepModel",  # one modelled step per training batch
]
WITH_POWER = ["+optim=[batch_size,power]", "callbacks.power.pl_step_W=50", "callbacks.power.warmup_steps=3"]


def optimum(selector: str, limits, eta: float = 0.5, factor: float = 1.1) -> tuple[int, int]:
    """The (size, limit) each selector's definition picks on the model (ties: higher limit, smaller size)."""
    pairs = [(b, w) for b in SIZES for w in limits]
    J = {p: MODEL.J_per_sample(*p) for p in pairs}
    S = {p: MODEL.s_per_sample(*p) for p in pairs}
    if selector == "energy":
        cost = J
    elif selector == "time":
        cost = S
    elif selector == "zeus_cost":
        cost = {p: eta * J[p] + (1 - eta) * MAX_W * S[p] for p in pairs}
    else:
        fastest = min(S.values())
        cost = {p: J[p] for p in pairs if S[p] <= factor * fastest}
    return min(cost, key=lambda p: (cost[p], -p[1], p[0]))


def fit(make_cfg, gpu: PowerGPU, *overrides: str) -> dict:
    BUILT.clear()
    cfg = make_cfg(*JOINT, *overrides)
    with install_power_gpu(gpu):
        train(cfg)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert summary["status"] == "completed"
    return summary


def finder_lines(caplog, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == FINDER_LOGGER and word in r.getMessage()]


# ---- the model ----------------------------------------------------------------------------------
def test_the_model_makes_the_joint_optimum_differ_from_the_sequential_choice():
    sequential_size = optimum("energy", [MAX_W])[0]  # the finder alone, at the card's maximum limit
    joint = optimum("energy", LIMITS)
    assert sequential_size != joint[0] and joint[1] != MAX_W
    # the sequential route (the tuner then profiles limits at that size) ends at a worse pair
    after = optimum_at_size("energy", sequential_size)
    assert MODEL.J_per_sample(*joint) < MODEL.J_per_sample(sequential_size, after)
    # the selectors disagree, so the test below tells them apart
    picks = {optimum(s, LIMITS, eta=0.7, factor=1.2) for s in ("energy", "time", "zeus_cost", "max_slowdown")}
    assert len(picks) == 4


def optimum_at_size(selector: str, b: int) -> int:
    assert selector == "energy"
    return min(LIMITS, key=lambda w: (MODEL.J_per_sample(b, w), -w))


# ---- the choice ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("selector", "overrides", "kwargs"),
    [
        ("energy", [], {}),
        ("time", [], {}),
        ("zeus_cost", ["callbacks.batch_size.eta=0.5"], {"eta": 0.5}),
        ("zeus_cost", ["callbacks.batch_size.eta=0.7"], {"eta": 0.7}),
        ("max_slowdown", ["callbacks.batch_size.max_slowdown=1.2"], {"factor": 1.2}),
    ],
)
def test_each_selector_trains_at_the_models_joint_optimum_and_the_card_ends_at_its_original_limit(
    make_cfg, caplog, selector, overrides, kwargs
):
    caplog.set_level(logging.INFO)
    want_b, want_W = optimum(selector, LIMITS, **kwargs)
    gpu = PowerGPU(limit_W=ORIGINAL_W)
    s = fit(make_cfg, gpu, *WITH_POWER, f"callbacks.batch_size.selector={selector}", *overrides)

    assert s["batch_size/joint"] is True and "batch_size/joint_fallback" not in s
    assert (s["batch_size/chosen"], s["batch_size/limit_W"]) == (want_b, want_W)
    # every size was measured at every limit of the tuner's grid, the limit really set on the card
    measure = BUILT[-1]
    assert measure.calls == [(b, w) for w in LIMITS for b in SIZES]
    # the tuner's warm-up (3 steps) after each limit change, at the smallest size
    assert measure.settles == [(SIZES[0], 3, w) for w in LIMITS]
    rows = s["batch_size/candidates"]
    assert [(r["batch_size"], r["limit_W"]) for r in rows] == measure.calls
    for r in rows:
        assert r["J_per_sample"] == pytest.approx(MODEL.J_per_sample(r["batch_size"], r["limit_W"]))
    # the tuner adopted the limit, did not profile, and the guard put the original back
    assert s["power/status"] == "tuned" and s["power/source"] == "batch_size joint search"
    assert s["power/limit_W"] == want_W and s["power/original_limit_W"] == ORIGINAL_W
    assert "power/profile" not in s and s["power/restored"] is True
    assert Power.report_rows(s) == [
        ("power limit (power)", f"tuned, {want_W} W (by the batch_size joint search)")
    ]
    assert gpu.step_limits_W == [want_W] * TRAIN_BATCHES  # every training batch ran at the chosen limit
    changes = [mw // 1000 for mw in gpu.limit_history]
    assert changes == LIMITS + ([want_W] if want_W != LIMITS[-1] else []) + [ORIGINAL_W]
    assert gpu.limit_W == ORIGINAL_W
    assert not any("__wattwise_power_" in r.getMessage() for r in caplog.records)
    assert len(finder_lines(caplog, f"and power limit {want_W} W (joint search)")) == 1


def test_a_cached_joint_profile_skips_all_measuring(make_cfg, tmp_path):
    cache = [f"callbacks.batch_size.profile_dir={tmp_path / 'profiles'}"]
    first = fit(make_cfg, PowerGPU(limit_W=ORIGINAL_W), *WITH_POWER, *cache)
    assert first["batch_size/profile"] == "measured" and len(BUILT[-1].calls) == len(SIZES) * len(LIMITS)
    saved = json.loads(Path(first["batch_size/profile_file"]).read_text())
    assert saved["key"]["limits_W"] == LIMITS

    gpu = PowerGPU(limit_W=ORIGINAL_W)
    again = fit(make_cfg, gpu, *WITH_POWER, *cache)
    assert BUILT[-1].calls == [] and BUILT[-1].settles == []  # not one step measured by either method
    assert again["batch_size/profile"] == "cached" and again["power/status"] == "cached"
    want = optimum("energy", LIMITS)
    assert (
        (again["batch_size/chosen"], again["batch_size/limit_W"])
        == want
        == (
            first["batch_size/chosen"],
            first["batch_size/limit_W"],
        )
    )
    assert gpu.step_limits_W == [want[1]] * TRAIN_BATCHES
    # one change to check permission (the grid's first limit), the choice, the original back
    assert [mw // 1000 for mw in gpu.limit_history] == [LIMITS[0], want[1], ORIGINAL_W]
    # a sequential profile of the same run is another key: the joint one is not read for it
    seq = fit(make_cfg, PowerGPU(limit_W=ORIGINAL_W), "+optim=[batch_size]", *cache)
    assert seq["batch_size/profile"] == "measured" and seq["batch_size/joint"] is False


def test_a_resumed_run_trains_at_the_saved_pair_without_measuring(make_cfg, tmp_path):
    first = fit(make_cfg, PowerGPU(limit_W=ORIGINAL_W), *WITH_POWER)
    want = optimum("energy", LIMITS)
    assert (first["batch_size/chosen"], first["batch_size/limit_W"]) == want
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    gpu = PowerGPU(limit_W=ORIGINAL_W)
    resumed = fit(make_cfg, gpu, *WITH_POWER, "trainer.max_epochs=2", f"ckpt_path={last}")
    assert BUILT[-1].calls == [] and BUILT[-1].settles == []
    assert (resumed["batch_size/chosen"], resumed["batch_size/limit_W"]) == want
    assert resumed["power/limit_W"] == want[1] and resumed["power/source"] == "batch_size joint search"
    assert "power/profile" not in resumed and gpu.limit_W == ORIGINAL_W
    assert gpu.step_limits_W and set(gpu.step_limits_W) == {want[1]}


# ---- falling back to the sequential search ----------------------------------------------------------
def _assert_sequential(s: dict, gpu: PowerGPU, caplog, why: str) -> None:
    """The finder chose at the card's current limit, said why in one line, and set no limit."""
    assert s["batch_size/joint"] is False and s["batch_size/limit_W"] is None
    assert why in s["batch_size/joint_fallback"]
    assert s["batch_size/chosen"] == optimum("energy", [ORIGINAL_W])[0]
    assert BUILT[-1].calls == [(b, ORIGINAL_W) for b in SIZES] and BUILT[-1].settles == []
    assert all("limit_W" not in r for r in s["batch_size/candidates"])
    lines = finder_lines(caplog, "joint_power")
    assert len(lines) == 1 and why in lines[0] and "sequential" in lines[0]
    assert gpu.limit_history == [] and gpu.limit_W == ORIGINAL_W


def test_without_a_power_tuner_one_line_and_the_sequential_search(make_cfg, caplog):
    caplog.set_level(logging.INFO)
    gpu = PowerGPU(limit_W=ORIGINAL_W)
    s = fit(make_cfg, gpu, "+optim=[batch_size]")
    _assert_sequential(s, gpu, caplog, "no power tuner")
    assert "power/status" not in s


def test_a_dry_run_tuner_one_line_and_the_sequential_search(make_cfg, caplog):
    caplog.set_level(logging.INFO)
    gpu = PowerGPU(limit_W=ORIGINAL_W)
    s = fit(make_cfg, gpu, *WITH_POWER, "callbacks.power.dry_run=true")
    _assert_sequential(s, gpu, caplog, "dry run")
    assert s["power/status"] == "dry_run"  # the tuner still reports its plan, at the chosen size


def test_no_permission_one_line_and_the_sequential_search(make_cfg, caplog):
    caplog.set_level(logging.INFO)
    gpu = PowerGPU(limit_W=ORIGINAL_W, permitted=False, persistence=True)
    s = fit(make_cfg, gpu, *WITH_POWER)
    _assert_sequential(s, gpu, caplog, "cannot change the limit")
    assert s["power/status"] == "no_permission" and s["power/limit_W"] == ORIGINAL_W
    warnings = [r for r in caplog.records if r.name == POWER_LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "permission" in warnings[0].getMessage().lower()  # the tuner's own


def test_a_tuner_that_steps_aside_leaves_the_sequential_search(make_cfg, caplog):
    caplog.set_level(logging.INFO)
    gpu = PowerGPU(limit_W=ORIGINAL_W)
    # no Zeus monitor (energy=estimate): the tuner steps aside (skip) when the finder asks it
    s = fit(
        make_cfg,
        gpu,
        *WITH_POWER,
        "callbacks.power.if_not_applicable=skip",
        "energy=estimate",
    )
    assert s["power/status"] == "skipped" and s["power/reason"] == "no_gpu"  # no Zeus monitor on the CPU
    assert s["batch_size/joint"] is False and "not tuning" in s["batch_size/joint_fallback"]
    assert len(finder_lines(caplog, "joint_power")) == 1 and gpu.limit_history == []


def test_a_finder_that_chooses_nothing_hands_the_card_back_and_the_tuner_profiles_alone(make_cfg, caplog):
    caplog.set_level(logging.INFO)
    gpu = PowerGPU(limit_W=ORIGINAL_W)
    s = fit(
        make_cfg,
        gpu,
        *WITH_POWER,
        "+callbacks.batch_size.measure.oom_from=32",  # one feasible size: nothing to choose between
        "callbacks.batch_size.if_not_applicable=skip",
        "callbacks.power.warmup_steps=1",
        "callbacks.power.profile_steps=2",
        "callbacks.power.selector=energy",
        "trainer.limit_train_batches=20",
    )
    assert s["batch_size/status"] == "skipped"
    # the tuner profiled on its own (its own grid, at the configured size) and chose by its selector
    assert s["power/status"] == "tuned" and "power/source" not in s
    assert sorted(map(int, s["power/profile"]), reverse=True) == LIMITS
    assert gpu.limit_W == ORIGINAL_W and s["power/restored"] is True


def test_joint_power_must_be_a_bool():
    with pytest.raises(ConfigError, match=r"^callbacks\.batch_size\.joint_power must be true or false"):
        BatchSize(joint_power="yes")


# ---- DDP --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_two_ranks_pool_their_cards_rank_zero_decides_the_pair_and_each_sets_its_own(tmp_path):
    """Two gloo ranks, each with its own fake card and a different job: the pair is chosen on the
    pooled figures (not what either rank alone would choose), and each card trains at it and ends
    at its own original limit."""
    from conftest import run_two_gloo_ranks
    from fake_joint_model import DDP_MODELS, DDP_SIZES

    run_two_gloo_ranks("fake_joint_model", tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    # the finder's default selector (energy) on the pooled figures: energy summed over the ranks
    pairs = [(b, w) for b in DDP_SIZES for w in LIMITS]
    job_J = {p: sum(m.J_per_sample(*p) for m in DDP_MODELS) for p in pairs}
    together = min(pairs, key=lambda p: (job_J[p], -p[1], p[0]))
    alone = [min(pairs, key=lambda p, m=m: (m.J_per_sample(*p), -p[1], p[0])) for m in DDP_MODELS]
    assert together not in alone  # the decision used both ranks' cards
    for r in ranks:
        assert (r["chosen"], r["limit_W"]) == together and r["datamodule_batch_size"] == together[0]
        assert r["calls"] == [[b, w] for w in LIMITS for b in DDP_SIZES]  # its own card at each limit
        assert r["tuner_status"] == "tuned" and r["tuner_source"] == "batch_size joint search"
        assert r["trained_at_W"] == [together[1]] * 3
        assert r["final_limit_mW"] == ORIGINAL_mW
    assert ranks[0]["limit_history_mW"] == ranks[1]["limit_history_mW"]  # the same changes, in step
