"""The energy-aware batch-size finder (`+optim=batch_size`): choice, LR rule, cache, memory, restore, DDP.

The choices are checked against a power/time model (tests/fake_batch_model.py) whose optimum for
each selector is computed here from the model's formulas; the real steps are checked by real fits
on the CPU (digits + MLP), with no assertion on what they measured.
"""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from conftest import compose_cfg, run_two_gloo_ranks, train_in_process
from fake_batch_model import (
    DDP_CANDIDATES,
    DDP_MODELS,
    FakeDataModule,
    FakeModel,
    TinyModule,
    stand_in_trainer,
)
from hydra.core.global_hydra import GlobalHydra

from wattwise.methods.base import NotApplicableError
from wattwise.methods.batch_size import callback as batch_size_module
from wattwise.methods.batch_size.callback import BatchSize
from wattwise.methods.batch_size.candidates import plan_candidates
from wattwise.methods.batch_size.measure import StepMeasurer
from wattwise.train import build
from wattwise.utils.errors import ConfigError

CANDIDATES = [16, 32, 64, 128, 256, 512, 1024, 2048]
HUNGRY = DDP_MODELS[1]  # small batches cheapest in energy, mid-size fastest: the selectors disagree


def fresh(model: FakeModel) -> FakeModel:
    return FakeModel(**{k: v for k, v in vars(model).items() if k != "calls"})


def run_finder(model: FakeModel, optimizer: str = "sgd", configured: int = 64, scheduler: bool = False, **kw):
    module = TinyModule()
    opt = (
        torch.optim.SGD(module.parameters(), lr=0.1)
        if optimizer == "sgd"
        else torch.optim.Adam(module.parameters(), lr=1e-3)
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10) if scheduler else None
    dm = FakeDataModule(batch_size=configured)
    trainer = stand_in_trainer(module, opt, dm, scheduler=sched)
    settings = {"candidates": CANDIDATES, "profile_dir": None, **kw}
    finder = BatchSize(measure=model.measure, **settings)
    finder.on_fit_start(trainer, module)
    return finder, dm, opt, sched


def analytic_optimum(m: FakeModel, selector: str, candidates, eta=0.5, factor=1.1, fits=lambda b: True):
    """Each selector's definition on the model's per-sample figures (ties: the smaller size)."""
    ok = [b for b in candidates if fits(b)]
    J = {b: m.power(b) * m.step_time(b) / b for b in ok}
    S = {b: m.step_time(b) / b for b in ok}
    if selector == "energy":
        return min(ok, key=J.get)
    if selector == "time":
        return min(ok, key=S.get)
    if selector == "zeus_cost":
        max_power = max(m.power(b) for b in ok)
        return min(ok, key=lambda b: eta * J[b] + (1 - eta) * max_power * S[b])
    if selector == "max_slowdown":
        return min((b for b in ok if S[b] <= factor * min(S.values())), key=J.get)
    raise ValueError(selector)


# ---- the choice ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", [FakeModel(), HUNGRY], ids=["default", "hungry"])
@pytest.mark.parametrize(
    ("selector", "settings"),
    [
        ("energy", {}),
        ("time", {}),
        ("zeus_cost", {"eta": 0.5}),
        ("zeus_cost", {"eta": 0.9}),
        ("max_slowdown", {"max_slowdown": 1.1}),
        ("max_slowdown", {"max_slowdown": 1.5}),
    ],
)
def test_the_choice_is_the_models_analytic_optimum_for_each_selector(model, selector, settings):
    model = fresh(model)
    finder, dm, _, _ = run_finder(model, selector=selector, **settings)
    want = analytic_optimum(
        model, selector, CANDIDATES, eta=settings.get("eta", 0.5), factor=settings.get("max_slowdown", 1.1)
    )
    assert finder.status == "active" and finder.chosen == want and dm.batch_size == want
    assert model.calls == CANDIDATES  # every candidate, ascending, once


def test_the_selectors_disagree_on_the_model_so_the_test_above_tells_them_apart():
    optima = {s: analytic_optimum(HUNGRY, s, CANDIDATES) for s in ("energy", "time", "zeus_cost")}
    assert len(set(optima.values())) == 3


def test_the_figures_hold_every_candidates_per_sample_cost():
    model = fresh(HUNGRY)
    finder, _, _, _ = run_finder(model)
    figures = finder.summary_figures()
    json.dumps(figures, allow_nan=False)
    rows = figures["batch_size/candidates"]
    assert [r["batch_size"] for r in rows] == CANDIDATES
    for r in rows:
        b = r["batch_size"]
        assert math.isclose(r["J_per_sample"], model.J_per_sample(b))
        assert math.isclose(r["s_per_sample"], model.s_per_sample(b))
        assert r["oom"] is False and r["peak_memory_bytes"] == model.m0 + model.m1 * b
    assert figures["batch_size/configured"] == 64 and figures["batch_size/profile"] == "measured"
    assert figures["batch_size/selector"] == "energy per sample"
    label, text = BatchSize.report_rows(figures)[0]
    assert label == "batch size (batch_size)" and text.startswith(f"{finder.chosen} (configured 64")


# ---- the learning rate --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("optimizer", "rule", "expected_rule"),
    [
        ("sgd", "auto", "linear"),
        ("adam", "auto", "sqrt"),
        ("adam", "linear", "linear"),
        ("sgd", "sqrt", "sqrt"),
    ],
)
def test_the_lr_is_scaled_on_the_real_optimizer_by_the_rule(optimizer, rule, expected_rule):
    model = fresh(FakeModel())  # energy optimum 512, configured 64: 8x
    finder, _, opt, _ = run_finder(model, optimizer=optimizer, lr_scaling=rule)
    assert finder.chosen == 512
    base = 0.1 if optimizer == "sgd" else 1e-3
    want = base * (8 if expected_rule == "linear" else math.sqrt(8))
    assert math.isclose(opt.param_groups[0]["lr"], want)
    assert finder.lr_before == base and math.isclose(finder.lr_after, want)
    assert finder.lr_rule == expected_rule


def test_lr_scaling_none_leaves_the_lr_and_a_schedulers_base_lrs_scale_with_it():
    _, _, opt, _ = run_finder(fresh(FakeModel()), lr_scaling="none")
    assert opt.param_groups[0]["lr"] == 0.1
    _, _, opt, sched = run_finder(fresh(FakeModel()), scheduler=True)
    assert math.isclose(opt.param_groups[0]["lr"], 0.8) and math.isclose(sched.base_lrs[0], 0.8)
    assert math.isclose(opt.param_groups[0]["initial_lr"], 0.8)


# ---- the cache ----------------------------------------------------------------------------------
def test_a_cached_profile_skips_the_search_and_chooses_the_same(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="wattwise.methods.batch_size.callback")
    first = fresh(HUNGRY)
    a, _, _, _ = run_finder(first, profile_dir=str(tmp_path))
    assert first.calls == CANDIDATES and a.profile == "measured" and a.profile_file.is_file()
    second = fresh(HUNGRY)
    b, dm, opt, _ = run_finder(second, profile_dir=str(tmp_path))
    assert second.calls == []  # not one step measured
    assert b.profile == "cached" and b.chosen == a.chosen == dm.batch_size
    assert math.isclose(opt.param_groups[0]["lr"], a.lr_after)  # the LR is still scaled
    assert f"cached profile {a.profile_file}" in caplog.text
    # a cached profile is re-chosen with this run's selector
    c, _, _, _ = run_finder(fresh(HUNGRY), profile_dir=str(tmp_path), selector="time")
    assert c.profile == "cached" and c.chosen == analytic_optimum(HUNGRY, "time", CANDIDATES)


def test_an_unreadable_profile_warns_and_measures_again(tmp_path, caplog):
    a, _, _, _ = run_finder(fresh(HUNGRY), profile_dir=str(tmp_path))
    a.profile_file.write_text("{not json")
    caplog.set_level(logging.WARNING)
    again = fresh(HUNGRY)
    b, _, _, _ = run_finder(again, profile_dir=str(tmp_path))
    assert again.calls == CANDIDATES and b.profile == "measured" and b.chosen == a.chosen
    assert "Ignoring the unreadable batch-size profile" in caplog.text
    assert json.loads(a.profile_file.read_text())["key"]["candidates"] == CANDIDATES  # rewritten whole


# ---- memory -------------------------------------------------------------------------------------
def test_candidates_over_the_memory_limit_are_excluded(monkeypatch):
    model = fresh(FakeModel())  # energy optimum 512
    limit = model.m0 + model.m1 * 300  # 256 fits, 512 does not
    monkeypatch.setattr(batch_size_module, "_memory_limit", lambda device, fraction: limit)
    finder, _, _, _ = run_finder(model)
    fits = lambda b: model.m0 + model.m1 * b <= limit  # noqa: E731
    assert finder.chosen == analytic_optimum(model, "energy", CANDIDATES, fits=fits) == 256
    over = [r for r in finder.records if r["infeasible"]]
    assert [r["batch_size"] for r in over] == [512, 1024, 2048]


def test_out_of_memory_marks_that_size_and_every_larger_one_and_stops_measuring():
    model = fresh(FakeModel())
    model.oom_from = 512
    finder, _, _, _ = run_finder(model)
    assert model.calls == [16, 32, 64, 128, 256, 512]  # nothing larger was tried
    assert [r["batch_size"] for r in finder.records if r["oom"]] == [512, 1024, 2048]
    assert finder.chosen == analytic_optimum(model, "energy", CANDIDATES, fits=lambda b: b < 512) == 256


def test_a_real_cuda_oom_is_caught_as_infeasible(monkeypatch):
    """The real measurer turns torch.cuda.OutOfMemoryError into an out-of-memory measurement."""
    measurer = StepMeasurer.__new__(StepMeasurer)

    class Meter:
        def begin(self, key):
            self.open = key

        def is_open(self, key):
            return True

        def end(self, key):
            self.closed = key

    dm = FakeDataModule(n=64, batch_size=8)
    measurer.trainer = stand_in_trainer(TinyModule(), torch.optim.SGD(TinyModule().parameters(), lr=0.1), dm)
    measurer.module, measurer.meter = TinyModule(), Meter()
    measurer.warmup_steps, measurer.measure_steps, measurer.device, measurer.calls = (
        0,
        1,
        torch.device("cpu"),
        0,
    )

    def boom(batch, index):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    measurer._step = boom
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    m = measurer(32)
    assert m.oom and m.batch_size == 32 and measurer.meter.closed == "wattwise.batch_size.32"


# ---- candidates and stepping aside ----------------------------------------------------------------
def test_auto_candidates_are_powers_of_two_with_the_configured_size_capped_by_the_epoch():
    plan = plan_candidates("auto", 96, 16, 4096, samples_per_rank=2000, min_steps_per_epoch=8)

    assert plan.sizes == (16, 32, 64, 96, 128)  # 2000 // 8 = 250: 256 and above would leave < 8 batches
    assert set(plan.dropped) == {256, 512, 1024, 2048, 4096} and plan.cap == 250


def test_it_steps_aside_without_an_integer_batch_size_and_on_a_tiny_train_set():
    module = TinyModule()
    opt = torch.optim.SGD(module.parameters(), lr=0.1)

    class NoBatchSize:
        pass

    finder = BatchSize(measure=FakeModel().measure, if_not_applicable="skip")
    finder.on_fit_start(stand_in_trainer(module, opt, NoBatchSize()), module)
    assert finder.status == "skipped" and "batch_size" in finder.skipped_reason
    tiny = FakeDataModule(n=200, batch_size=16)  # 200 // 8 = 25: only 16 is a candidate
    finder = BatchSize(measure=FakeModel().measure)
    with pytest.raises(NotApplicableError, match="allows 1 candidate"):
        finder.on_fit_start(stand_in_trainer(module, opt, tiny), module)


# ---- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"selector": "joules"}, "selector"),
        ({"eta": 1.5}, "eta"),
        ({"max_slowdown": 0.9}, "max_slowdown"),
        ({"candidates": "all"}, "candidates"),
        ({"candidates": [64]}, "candidates"),
        ({"candidates": [64, 0]}, "candidates"),
        ({"min_batch_size": 0}, "min_batch_size"),
        ({"max_batch_size": 8}, "max_batch_size"),
        ({"min_steps_per_epoch": 0}, "min_steps_per_epoch"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"measure_steps": 0}, "measure_steps"),
        ({"measure_steps": 2.5}, "measure_steps"),
        ({"max_memory_fraction": 0}, "max_memory_fraction"),
        ({"max_memory_fraction": 2}, "max_memory_fraction"),
        ({"lr_scaling": "cubic"}, "lr_scaling"),
        ({"if_not_applicable": "maybe"}, "if_not_applicable"),
    ],
)
def test_a_bad_setting_is_one_line_naming_its_key(settings, key):
    with pytest.raises(ConfigError, match=rf"^callbacks\.batch_size\.{key} ") as err:
        BatchSize(**settings)
    assert "\n" not in str(err.value)


# ---- resume -------------------------------------------------------------------------------------
def test_a_resumed_finder_reapplies_the_saved_size_without_measuring_or_rescaling():
    a, _, _, _ = run_finder(fresh(FakeModel()))
    saved = a.state_dict()
    model = fresh(FakeModel())
    module = TinyModule()
    opt = torch.optim.SGD(module.parameters(), lr=0.8)  # as the checkpoint's optimizer state restores it
    dm = FakeDataModule(batch_size=64)
    finder = BatchSize(candidates=CANDIDATES, measure=model.measure, profile_dir=None)
    finder.load_state_dict(saved)
    finder.on_fit_start(stand_in_trainer(module, opt, dm), module)
    assert model.calls == [] and dm.batch_size == a.chosen == finder.chosen
    assert opt.param_groups[0]["lr"] == 0.8  # not scaled a second time
    assert finder.state_dict() == saved


# ---- real fits ------------------------------------------------------------------------------------
REAL = [
    "+optim=batch_size",
    "trainer.accelerator=cpu",
    "callbacks.batch_size.candidates=[16,64]",
    "callbacks.batch_size.warmup_steps=1",
    "callbacks.batch_size.measure_steps=2",
    "test=false",
]


class Probe:
    """A callback after the finder: the params at fit start and the train loader's batch size."""

    def __init__(self) -> None:
        import lightning as L

        outer = self

        class _Cb(L.Callback):
            def on_fit_start(self, trainer, pl_module):
                outer.params_at_fit_start = {k: v.clone() for k, v in pl_module.state_dict().items()}

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx == 0:
                    outer.loader_batch_size = trainer.train_dataloader.batch_size
                    outer.first_batch_len = len(batch[0])

        self.callback = _Cb()


def test_a_real_fit_measures_restores_the_net_and_trains_at_the_choice(tmp_path, monkeypatch):
    cfg = compose_cfg(tmp_path, [*REAL, f"callbacks.batch_size.profile_dir={tmp_path}/profiles"])
    parts = build(cfg)
    trainer, module, dm = parts["trainer"], parts["module"], parts["datamodule"]
    probe = Probe()
    trainer.callbacks.append(probe.callback)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    after_measuring: list[dict[str, torch.Tensor]] = []
    real_call = StepMeasurer.__call__

    def watched(self, b):
        out = real_call(self, b)
        after_measuring.append({k: v.clone() for k, v in self.module.state_dict().items()})
        return out

    monkeypatch.setattr(StepMeasurer, "__call__", watched)
    trainer.fit(module, datamodule=dm)
    GlobalHydra.instance().clear()
    finder = next(m for m in parts["methods"] if m.name == "batch_size")
    assert finder.status == "active" and finder.profile == "measured" and finder.chosen in (16, 64)
    # the measured steps really trained the net ...
    assert len(after_measuring) == 2
    assert any(not torch.equal(after_measuring[-1][k], before[k]) for k in before)
    # ... and the finder put it back before training started
    assert all(torch.equal(probe.params_at_fit_start[k], before[k]) for k in before)
    assert probe.loader_batch_size == finder.chosen == dm.batch_size == probe.first_batch_len
    assert all(r["J_per_sample"] > 0 and r["s_per_sample"] > 0 for r in finder.records)
    assert finder.search_J > 0 and finder.energy_source == "estimate"
    assert finder.profile_file.is_file()


def test_training_after_the_search_equals_training_without_it_at_the_same_size_and_lr(tmp_path):
    """Restore is exact: the weights after training equal a run without the finder set to its choice."""
    with_finder, run_a = train_in_process(tmp_path / "a", [*REAL, "callbacks.batch_size.profile_dir=null"])
    assert with_finder["status"] == "completed", with_finder.get("error")
    chosen, lr = with_finder["batch_size/chosen"], with_finder["batch_size/lr_after"]
    for key in ("configured", "lr_before", "lr_rule", "candidates", "profile", "search_J", "search_s"):
        assert f"batch_size/{key}" in with_finder
    assert [c["batch_size"] for c in with_finder["batch_size/candidates"]] == [16, 64]
    plain, run_b = train_in_process(
        tmp_path / "b",
        ["trainer.accelerator=cpu", "test=false", f"data.batch_size={chosen}", f"model.optimizer.lr={lr!r}"],
    )
    a = torch.load(run_a / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["state_dict"]
    b = torch.load(run_b / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- DDP (two processes: ~20 s of start-up on a shared CPU) -------------------------------------
@pytest.mark.slow
def test_ddp_ranks_pool_their_measurements_and_apply_one_choice(tmp_path):
    run_two_gloo_ranks("fake_batch_model", tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # the job's J/sample: energy summed over the ranks over the samples of both
    job_J = {b: sum(m.power(b) * m.step_time(b) for m in DDP_MODELS) / (2 * b) for b in DDP_CANDIDATES}
    together = min(DDP_CANDIDATES, key=job_J.get)
    own = [min(DDP_CANDIDATES, key=m.J_per_sample) for m in DDP_MODELS]
    assert together not in own  # neither rank alone would have chosen it: the decision used both
    for r in ranks:
        assert r["status"] == "active" and r["chosen"] == r["datamodule_batch_size"] == together
        assert math.isclose(r["lr"], 0.1 * together / 64)  # the same LR on every rank (SGD: linear)
        assert r["calls"] == list(DDP_CANDIDATES)
    assert ranks[0]["records"] == ranks[1]["records"]  # the pooled figures, on every rank
    slowest = {b: max(m.step_time(b) for m in DDP_MODELS) for b in DDP_CANDIDATES}
    for rec in ranks[0]["records"]:
        b = rec["batch_size"]
        assert math.isclose(rec["J_per_sample"], job_J[b])
        assert math.isclose(rec["s_per_sample"], 4 * slowest[b] / (2 * 4 * b))


def test_the_power_tuner_runs_after_the_finder():
    """Batch size first (at the card's current limit), then the power limit for that batch size."""
    from wattwise.methods.power.callback import Power
    from wattwise.methods.registry import ordered

    names = [m.name for m in ordered([Power(), BatchSize()])]
    assert names.index("batch_size") < names.index("power")
