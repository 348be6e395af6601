"""Energy-aware batch-size finder (`+optim=batch_size`); card: the card (methods/batch_size/README.md).

Method card
-----------
What it does
    When fit starts, before the first training batch, it runs a few real training steps at each
    candidate batch size (powers of two from `min_batch_size` to `max_batch_size` and the configured
    `data.batch_size`, or an explicit list; none so large that an epoch on one rank has fewer than
    `min_steps_per_epoch` batches): `warmup_steps` unmeasured, then `measure_steps` read with the
    run's energy meter, on batches of the real train data. The selector (`energy`, `time`,
    `zeus_cost`, `max_slowdown`: the power tuner's, per training sample) picks a size among those
    that fit in `max_memory_fraction` of the device's memory and did not run out of it. The net,
    optimizer, schedulers and RNG states are then put back exactly as they were, the datamodule's
    `batch_size` is set to the choice and the learning rate scaled by `lr_scaling` (auto: linear
    for SGD, Goyal et al. 2017; square root for Adam-family and other optimizers, Malladi et al.
    2022). One log line gives the choice, every candidate's J/sample and s/sample, and the LR.
What it saves
    Energy per training sample: larger batches use the device better (on an H100, ResNet-18 at
    batch 1024 used 20 % less energy per sample than at 256). Energy per sample is not energy to a
    target accuracy: a larger batch may need more epochs, and the LR rule is a heuristic.
What it costs
    (warmup_steps + measure_steps) training steps per candidate, at fit start. They are counted in
    the run's energy (the energy monitor's segment is open: it runs first), reported as
    `batch_size/search_J` and `batch_size/search_s`. A profile is cached per device, net, input
    shape, precision, world size, candidates, step counts, optimizer and meter source, so a repeat
    run measures nothing; a resumed run (ckpt_path) re-applies the saved size without measuring.
When it steps aside
    No datamodule with an integer `batch_size` attribute (Lightning's convention), manual
    optimization, fewer than 2 candidates once the epoch length caps them, fewer than 2 feasible
    (fitting in memory) candidates, or a meter that read 0 J: `if_not_applicable` fail (the
    default) stops in one line, skip trains at the configured size.
When not to use it
    Tuned recipes whose batch size and LR go together (the LR rule only approximates a re-tune);
    tiny datasets (few steps per epoch at a large batch); nets with BatchNorm that are sensitive to
    the batch statistics of small batches. Energy figures from `energy=estimate` are estimates
    (they follow CPU time and wall time, not the hardware), and so is the choice made from them.
How it composes
    `data_cache` reads `datamodule.batch_size` after this sets it. `power`: the size is chosen
    first, then the tuner profiles at it; with `joint_power: true` every size is measured at every
    limit of the tuner's grid (through the `power_limits` service it lends) and the best pair is
    trained at. `amp`: measured at the trainer's precision. `prune`: the choice stays. DDP: every
    rank measures, energy is summed and time is the slowest rank's, rank 0 decides for all.
    The card (README.md) gives the details.

The parts live beside it in this folder: `settings` (the keys), `candidates`, `measure`, `profile`
(one search), `choose`, `lr_scaling`, `cache`, `facts` (what it reads from the run) and `outcome`
(what it keeps and tells).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import lightning as L

from wattwise.compat import lightning as compat_lightning
from wattwise.methods.base import STATUS_ACTIVE, EnergyMethod
from wattwise.methods.batch_size import cache, facts
from wattwise.methods.batch_size.candidates import CandidatePlan, plan_candidates
from wattwise.methods.batch_size.choose import Choice, PairChoice, choose, choose_pair
from wattwise.methods.batch_size.facts import memory_limit as _memory_limit  # tests patch it here
from wattwise.methods.batch_size.lr_scaling import scale_learning_rates
from wattwise.methods.batch_size.measure import CandidateMeasurement, Measure, StepMeasurer, any_rank
from wattwise.methods.batch_size.outcome import Outcome, candidate_record, choice_line, report_rows
from wattwise.methods.batch_size.profile import run_search
from wattwise.methods.batch_size.settings import KEY, BatchSizeSettings
from wattwise.methods.shared.collective import decide_on_rank_zero
from wattwise.methods.shared.power_access import JOINT_SOURCE, LimitAccess, PowerLimitLender
from wattwise.methods.shared.selection import Rule
from wattwise.methods.shared.zeus_adapter import GpuError, MeasurementRejected

log = logging.getLogger(__name__)


class BatchSize(EnergyMethod):
    """Chooses the training batch size by measured energy (or time) per sample; scales the LR to it.

    Args (config keys `callbacks.batch_size.*`, checked by `BatchSizeSettings`):
        selector: `energy`, `time`, `zeus_cost` or `max_slowdown` (per training sample).
        eta: `zeus_cost`'s weight on energy against time, in [0, 1].
        max_slowdown: `max_slowdown`'s largest s/sample factor against the fastest candidate, >= 1.
        candidates: `auto` or a list of batch sizes.
        min_batch_size, max_batch_size: `auto`'s bounds (powers of two between them).
        min_steps_per_epoch: the fewest batches an epoch on one rank may hold at a candidate.
        warmup_steps: unmeasured steps per candidate, >= 0.
        measure_steps: measured steps per candidate, >= 1.
        max_memory_fraction: the share of device memory a candidate's peak may use, in (0, 1].
        lr_scaling: `auto`, `linear`, `sqrt` or `none`.
        profile_dir: where profiles are cached (null: no cache).
        joint_power: search batch size and GPU power limit together, on the power tuner's grid
            (needs `+optim=power` able to change limits; else one line and the sequential search).
        measure: a `Measure` replacing the real steps (tests pass a power/time model).
        if_not_applicable: `fail` or `skip`; see `wattwise.methods.base`.
    """

    name: ClassVar[str] = "batch_size"
    uses: ClassVar[tuple[str, ...]] = ("power_limits",)  # the joint search, where a power tuner runs
    figure_prefix: ClassVar[str] = "batch_size/"
    summary_keys: ClassVar[tuple[str, ...]] = ("batch_size/status", "batch_size/chosen")
    recipes: ClassVar[Mapping[str, Mapping[str, Any]]] = {}  # changes the batch size, hence accuracy

    def __init__(
        self,
        selector: str = "energy",
        eta: float = 0.5,
        max_slowdown: float = 1.1,
        candidates: str | Sequence[int] = "auto",
        min_batch_size: int = 16,
        max_batch_size: int = 4096,
        min_steps_per_epoch: int = 8,
        warmup_steps: int = 2,
        measure_steps: int = 8,
        max_memory_fraction: float = 0.9,
        lr_scaling: str = "auto",
        profile_dir: str | None = None,
        joint_power: bool = False,
        measure: Measure | None = None,
        if_not_applicable: str = "fail",
    ) -> None:
        super().__init__(if_not_applicable=if_not_applicable)
        fields = BatchSizeSettings.__dataclass_fields__
        self.settings = BatchSizeSettings.build(KEY, **{k: v for k, v in locals().items() if k in fields})
        self.profile_dir = Path(profile_dir) if profile_dir else None
        self.measure = measure
        self.outcome = Outcome()
        self._saved: dict[str, Any] | None = None  # from a checkpoint: re-apply, do not search

    def requirements(self) -> frozenset[str]:
        return frozenset({"energy"})  # it reads each candidate with the run's energy meter

    def __getattr__(self, name: str) -> Any:
        """The outcome's figures read as the finder's own (`finder.chosen`, `finder.lr_after`, ...)."""
        if name != "outcome" and name in Outcome.__dataclass_fields__:
            return getattr(self.outcome, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The choice and what it was made from: a resumed run re-applies it without measuring."""
        return self.outcome.to_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved = dict(state_dict) if state_dict.get("chosen") is not None else None

    # ---- Lightning hooks ------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Search (or load, or re-apply) the batch size before the first training batch."""
        self.ensure_services(trainer)
        if not self.active:
            return
        self.outcome = Outcome()
        datamodule = getattr(trainer, "datamodule", None)
        configured = getattr(datamodule, "batch_size", None)
        if datamodule is None or isinstance(configured, bool) or not isinstance(configured, int):
            self.step_aside("the run has no datamodule with an integer `batch_size` attribute", trainer)
            return
        if self._saved is not None:
            self._resume(trainer, datamodule, self._saved)
            return
        meter = getattr(self.energy_monitor, "meter", None)
        if not pl_module.automatic_optimization:
            self.step_aside("the module optimizes manually; its steps cannot be measured alone", trainer)
            return
        if meter is None and self.measure is None:
            self.step_aside("there is no energy meter to measure candidates with", trainer)
            return
        self.outcome.configured, self.outcome.energy_source = configured, getattr(meter, "source", None)
        loader = datamodule.train_dataloader()
        plan = self._plan(trainer, configured, loader)
        if plan is None:
            return
        tuner, access = self._borrow_limits(trainer) if self.settings.joint_power else (None, None)
        measurements, key, access = self._profile(
            trainer, pl_module, meter, plan.sizes, loader, tuner, access
        )
        del loader
        if self.outcome.profile == "measured":
            datamodule.batch_size = configured
        choice = self._decide(trainer, meter, measurements, configured, access)
        if isinstance(choice, str):
            if tuner is not None and access is not None:
                tuner.return_limits(trainer, "the joint search chose nothing")
            self.step_aside(f"no batch size to choose: {choice}", trainer)
            return
        if self.outcome.profile == "measured" and trainer.is_global_zero:
            cache.save_profile(self.outcome.profile_file, key, measurements)
        self._train_at(trainer, datamodule, choice, tuner)

    def _plan(self, trainer: L.Trainer, configured: int, loader: Any) -> CandidatePlan | None:
        """The sizes to measure, capped by the epoch's length; None after stepping aside (< 2 left)."""
        s = self.settings
        samples = facts.dataset_len(loader)
        per_rank = samples // max(trainer.world_size, 1) if samples is not None else None
        plan = plan_candidates(
            s.candidate_sizes, configured, s.min_batch_size, s.max_batch_size, per_rank, s.min_steps_per_epoch
        )
        self.outcome.dropped = {str(b): why for b, why in plan.dropped.items()}
        if len(plan.sizes) < 2:
            self.step_aside(
                f"the train set ({per_rank} samples per rank) allows {len(plan.sizes)} candidate batch "
                f"size(s) with min_steps_per_epoch={s.min_steps_per_epoch}",
                trainer,
            )
            return None
        return plan

    def _profile(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        meter: Any,
        sizes: Sequence[int],
        loader: Any,
        tuner: PowerLimitLender | None,
        access: LimitAccess | None,
    ) -> tuple[list[CandidateMeasurement], dict[str, Any], LimitAccess | None]:
        """The profile, joint where limits were lent; sequential at the current limit if the card refused."""
        measurements, key = self._measure_or_load(trainer, pl_module, meter, sizes, loader, tuner, access)
        if measurements is None:  # the card refused a change mid-search: sequential, at the current limit
            access = None
            measurements, key = self._measure_or_load(trainer, pl_module, meter, sizes, loader)
        assert measurements is not None
        return measurements, key, access

    def _measure_or_load(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        meter: Any,
        sizes: Sequence[int],
        loader: Any,
        tuner: PowerLimitLender | None = None,
        access: LimitAccess | None = None,
    ) -> tuple[list[CandidateMeasurement] | None, dict[str, Any]]:
        """The profile: cached (rank 0's file for every rank) or measured; None where the card refused."""
        limits = access.limits_W if access is not None else None
        key = facts.profile_key(
            trainer, pl_module, loader, sizes, self.settings, self.outcome.energy_source, limits
        )
        path = self.outcome.profile_file = cache.profile_path(self.profile_dir, key)
        # rank 0's cache for every rank: all search, or none does
        cached = decide_on_rank_zero(lambda: cache.load_cached(path, key))
        if cached is not None:
            self.outcome.profile = "cached"
            if trainer.is_global_zero:
                log.info("batch_size: cached %sprofile %s", "joint " if access else "", path)
            return cached, key
        self.outcome.profile = "measured"
        s = self.settings
        measure = self.measure or StepMeasurer(trainer, pl_module, meter, s.warmup_steps, s.measure_steps)
        try:
            result = run_search(trainer, pl_module, meter, sizes, measure, access)
        except GpuError as err:
            if tuner is None or access is None:
                raise
            tuner.return_limits(trainer, "the card refused a change during the joint search")
            self.outcome.joint_fallback = (
                f"the card refused a power-limit change during the joint search ({err})"
            )
            if trainer.is_global_zero:
                log.warning(
                    "batch_size: joint_power: %s; searching at the current limit.",
                    self.outcome.joint_fallback,
                )
            return None, key
        self.outcome.search_J, self.outcome.search_s = result.energy_J, result.time_s
        return result.measurements, key

    def _borrow_limits(self, trainer: L.Trainer) -> tuple[PowerLimitLender | None, LimitAccess | None]:
        """The power tuner's grid and card for the joint search, on every rank or none (one line if not)."""
        tuner: PowerLimitLender | None = self.services.get("power_limits")  # handed in: services.py
        lent = tuner.lend_limits(trainer) if tuner is not None else "there is no power tuner (+optim=power)"
        why = lent if isinstance(lent, str) else None
        if any_rank(why is not None, trainer.strategy.root_device):
            if tuner is not None and not isinstance(lent, str):
                tuner.return_limits(trainer, "another rank cannot join the joint search")
            self.outcome.joint_fallback = why or "another rank cannot change its power limit"
            if trainer.is_global_zero:
                log.warning(
                    "batch_size: joint_power is on, but %s: searching batch sizes at the current limit "
                    "(sequential: a power tuner profiles limits at the chosen size).",
                    self.outcome.joint_fallback,
                )
            return None, None
        assert tuner is not None and not isinstance(lent, str)
        limits = decide_on_rank_zero(lambda: lent.limits_W)  # rank 0's grid: all ranks change together
        return tuner, replace(lent, limits_W=tuple(limits))

    def _decide(
        self,
        trainer: L.Trainer,
        meter: Any,
        measurements: list[CandidateMeasurement],
        configured: int,
        access: LimitAccess | None,
    ) -> Choice | PairChoice | str:
        """Rank 0's choice for every rank (or why there is none); each candidate's record kept."""
        s, out = self.settings, self.outcome
        out.memory_limit_bytes = _memory_limit(trainer.strategy.root_device, s.max_memory_fraction)
        rule = Rule(s.selector, s.eta, s.max_slowdown, trainer.world_size)
        if access is not None:
            max_power = float(access.max_limit_W * trainer.world_size)
        else:
            max_power = (
                facts.card_max_power_W(meter, trainer.world_size) if s.selector == "zeus_cost" else None
            )

        def decide() -> Choice | PairChoice | str:
            try:
                if access is not None:
                    return choose_pair(measurements, rule, configured, out.memory_limit_bytes, max_power)
                return choose(measurements, rule, configured, out.memory_limit_bytes, max_power)
            except (ValueError, MeasurementRejected) as err:
                return str(err)

        choice = decide_on_rank_zero(decide)
        out.records = [candidate_record(m, choice, out.memory_limit_bytes) for m in measurements]
        return choice

    def _train_at(
        self, trainer: L.Trainer, datamodule: Any, choice: Choice | PairChoice, tuner: PowerLimitLender | None
    ) -> None:
        """Train at the choice: the datamodule's batch size, the LR by the rule, the limit; one log line."""
        out = self.outcome
        if isinstance(choice, PairChoice):
            out.joint, out.limit_W = True, choice.limit_W
        datamodule.batch_size = out.chosen = choice.batch_size
        compat_lightning.forget_train_loader(trainer)  # a loader built before fit start: rebuilt at the size
        scaling = scale_learning_rates(
            self.settings.lr_scaling,
            trainer.optimizers,
            trainer.lr_scheduler_configs,
            choice.batch_size,
            out.configured,
        )
        out.lr_before, out.lr_after, out.lr_rule = scaling.lr_before, scaling.lr_after, scaling.rule
        if trainer.is_global_zero:
            log.info(choice_line(out, self.settings.selector_text()))
        if isinstance(choice, PairChoice) and tuner is not None:
            cached = out.profile == "cached"
            tuner.adopt_limit(
                trainer, choice.limit_W, JOINT_SOURCE, self.settings.selector_text(), cached=cached
            )
        self.status = STATUS_ACTIVE

    def _resume(self, trainer: L.Trainer, datamodule: Any, saved: dict[str, Any]) -> None:
        """A resumed run: the saved size again; the LR is already scaled in the restored optimizer."""
        out = self.outcome = Outcome.from_state(saved)
        datamodule.batch_size = out.chosen
        compat_lightning.forget_train_loader(trainer)
        if out.joint and out.limit_W is not None and self.settings.joint_power:  # the saved limit again
            tuner, access = self._borrow_limits(trainer)
            if tuner is not None and access is not None:
                tuner.adopt_limit(
                    trainer, int(out.limit_W), JOINT_SOURCE, self.settings.selector_text(), cached=True
                )
            else:
                out.joint, out.limit_W = False, None
        self.status = STATUS_ACTIVE
        if trainer.is_global_zero:
            log.info(
                "batch_size: resumed at batch size %d from the checkpoint (no search; the learning rate "
                "%.4g comes with the optimizer's saved state)",
                out.chosen,
                out.lr_after or float("nan"),
            )

    # ---- results ----------------------------------------------------------------------------
    def method_figures(self) -> dict[str, Any]:
        """What `state_dict` keeps, as `batch_size/<key>` figures, plus the selector and any fallback."""
        if self.outcome.chosen is None:
            return {}
        fallback = self.outcome.joint_fallback
        return {
            **{f"{self.figure_prefix}{k}": v for k, v in self.state_dict().items()},
            "batch_size/selector": self.settings.selector_text(),
            **({"batch_size/joint_fallback": fallback} if fallback else {}),
        }

    @classmethod
    def report_rows(cls, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        return super().report_rows(summary) or report_rows(summary)


__all__: Sequence[str] = ["BatchSize"]
