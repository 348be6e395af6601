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
    `data_cache` reads `datamodule.batch_size` when a loader is built, after this sets it. With
    `power`: by default the batch size is chosen first, at the card's current limit, then the power
    tuner profiles at the chosen size (its profile key holds the batch size). With `joint_power:
    true` every size is measured at every limit of the tuner's grid (the Zeus paper's joint
    search), through the card handle and guard the tuner lends (`lend_limits`), and the best
    (size, limit) pair per sample is trained at: the tuner adopts the limit (`adopt_limit`), does
    not profile, and restores the original at fit end; the profile key holds the grid. Without a
    tuner able to change limits (none, dry run, stepped aside, no permission): one line, then the
    sequential search. `amp`: measures at the trainer's precision
    at fit start (its key holds the precision). `prune`: the net changes later; the choice stays.
    DDP: every rank measures the same candidates on its own device, energy is summed over ranks,
    time is the slowest rank's, out-of-memory on any rank excludes the size; rank 0 decides and
    every rank applies the same size and LR (joint: rank 0 decides the pair; every rank sets its own
    card's limit through its own tuner).

The parts live beside it in this folder: `candidates`, `measure`, `choose`, `lr_scaling`, `cache`.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch

from wattwise.compat import lightning as compat_lightning
from wattwise.methods.base import STATUS_ACTIVE, EnergyMethod
from wattwise.methods.batch_size import cache
from wattwise.methods.batch_size.candidates import plan_candidates
from wattwise.methods.batch_size.choose import Choice, PairChoice, choose, choose_pair, infeasible_reason
from wattwise.methods.batch_size.lr_scaling import LR_RULES, scale_learning_rates
from wattwise.methods.batch_size.measure import (
    KEY_PREFIX,
    CandidateMeasurement,
    Measure,
    StepMeasurer,
    any_rank,
    pool,
    restore,
    search,
    search_joint,
    snapshot,
)
from wattwise.methods.shared.collective import decide_on_rank_zero
from wattwise.methods.shared.power_access import JOINT_SOURCE, LimitAccess, PowerLimitLender
from wattwise.methods.shared.profile_cache import net_signature
from wattwise.methods.shared.selection import Rule
from wattwise.methods.shared.zeus_adapter import SELECTORS, GpuError, MeasurementRejected
from wattwise.utils.errors import ConfigError, require_int

log = logging.getLogger(__name__)

KEY = "callbacks.batch_size"


class BatchSize(EnergyMethod):
    """Chooses the training batch size by measured energy (or time) per sample; scales the LR to it.

    Args (config keys `callbacks.batch_size.*`):
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
        if selector not in SELECTORS:
            raise ConfigError(f"{KEY}.selector must be one of {', '.join(SELECTORS)}, got {selector!r}")
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0.0 <= eta <= 1.0:
            raise ConfigError(f"{KEY}.eta must be in [0, 1], got {eta!r}")
        if isinstance(max_slowdown, bool) or not isinstance(max_slowdown, int | float) or max_slowdown < 1.0:
            raise ConfigError(f"{KEY}.max_slowdown must be >= 1.0 (an s/sample factor), got {max_slowdown!r}")
        for key, value, low in (
            ("min_batch_size", min_batch_size, 1),
            ("max_batch_size", max_batch_size, 1),
            ("min_steps_per_epoch", min_steps_per_epoch, 1),
            ("warmup_steps", warmup_steps, 0),
            ("measure_steps", measure_steps, 1),
        ):
            require_int(f"{KEY}.{key}", value, low)
        if max_batch_size < min_batch_size:
            raise ConfigError(
                f"{KEY}.max_batch_size must be >= min_batch_size ({min_batch_size}), got {max_batch_size}"
            )
        self.candidates = self._check_candidates(candidates)
        if (
            isinstance(max_memory_fraction, bool)
            or not isinstance(max_memory_fraction, int | float)
            or not 0.0 < max_memory_fraction <= 1.0
        ):
            raise ConfigError(f"{KEY}.max_memory_fraction must be in (0, 1], got {max_memory_fraction!r}")
        if not isinstance(joint_power, bool):
            raise ConfigError(f"{KEY}.joint_power must be true or false, got {joint_power!r}")
        if lr_scaling not in LR_RULES:
            raise ConfigError(f"{KEY}.lr_scaling must be one of {', '.join(LR_RULES)}, got {lr_scaling!r}")
        self.selector = selector
        self.eta = float(eta)
        self.max_slowdown = float(max_slowdown)
        self.min_batch_size = min_batch_size
        self.max_batch_size = max_batch_size
        self.min_steps_per_epoch = min_steps_per_epoch
        self.warmup_steps = warmup_steps
        self.measure_steps = measure_steps
        self.max_memory_fraction = float(max_memory_fraction)
        self.lr_scaling = lr_scaling
        self.profile_dir = Path(profile_dir) if profile_dir else None
        self.joint_power = joint_power
        self.measure = measure
        self._saved: dict[str, Any] | None = None  # from a checkpoint: re-apply, do not search
        self._reset()

    @staticmethod
    def _check_candidates(candidates: Any) -> str | tuple[int, ...]:
        if isinstance(candidates, str):
            if candidates != "auto":
                raise ConfigError(
                    f"{KEY}.candidates must be auto or a list of batch sizes, got {candidates!r}"
                )
            return "auto"
        try:
            sizes = list(candidates)
        except TypeError:
            raise ConfigError(
                f"{KEY}.candidates must be auto or a list of batch sizes, got {candidates!r}"
            ) from None
        if len(set(sizes)) < 2 or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
            raise ConfigError(f"{KEY}.candidates must list at least 2 different integers >= 1, got {sizes}")
        return tuple(sorted(set(sizes)))

    def requirements(self) -> frozenset[str]:
        return frozenset({"energy"})  # it reads each candidate with the run's energy meter

    # ---- state ----------------------------------------------------------------------------
    def _reset(self) -> None:
        self.chosen: int | None = None
        self.configured: int | None = None
        self.lr_before: float | None = None
        self.lr_after: float | None = None
        self.lr_rule: str | None = None
        self.records: list[dict[str, Any]] = []
        self.profile: str | None = None  # measured | cached
        self.profile_file: Path | None = None
        self.search_J: float | None = None
        self.search_s: float | None = None
        self.memory_limit_bytes: int | None = None
        self.energy_source: str | None = None
        self.dropped: dict[str, str] = {}  # sizes not tried (the epoch would be too short), why
        self.joint = False  # chosen with the power limit (the joint search)
        self.limit_W: int | None = None  # the power limit chosen with the size (joint search)
        self.joint_fallback: str | None = None  # joint_power asked for, but why it could not be done

    def state_dict(self) -> dict[str, Any]:
        """The choice and what it was made from: a resumed run re-applies it without measuring."""
        if self.chosen is None:
            return {}
        return {
            "chosen": self.chosen,
            "configured": self.configured,
            "lr_before": self.lr_before,
            "lr_after": self.lr_after,
            "lr_rule": self.lr_rule,
            "candidates": [dict(r) for r in self.records],
            "profile": self.profile,
            "profile_file": str(self.profile_file) if self.profile_file else None,
            "search_J": self.search_J,
            "search_s": self.search_s,
            "memory_limit_bytes": self.memory_limit_bytes,
            "energy_source": self.energy_source,
            "not_tried": dict(self.dropped),
            "joint": self.joint,
            "limit_W": self.limit_W,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved = dict(state_dict) if state_dict.get("chosen") is not None else None

    # ---- Lightning hooks ------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.ensure_services(trainer)
        if not self.active:
            return
        self._reset()
        datamodule = getattr(trainer, "datamodule", None)
        configured = getattr(datamodule, "batch_size", None)
        if datamodule is None or isinstance(configured, bool) or not isinstance(configured, int):
            self.step_aside("the run has no datamodule with an integer `batch_size` attribute", trainer)
            return
        if self._saved is not None:
            self._resume(trainer, datamodule, self._saved)
            return
        if not pl_module.automatic_optimization:
            self.step_aside("the module optimizes manually; its steps cannot be measured alone", trainer)
            return
        monitor = self.energy_monitor
        meter = getattr(monitor, "meter", None)
        if meter is None and self.measure is None:
            self.step_aside("there is no energy meter to measure candidates with", trainer)
            return
        self.configured = configured
        self.energy_source = getattr(meter, "source", None)
        loader = datamodule.train_dataloader()
        samples = _dataset_len(loader)
        per_rank = samples // max(trainer.world_size, 1) if samples is not None else None
        plan = plan_candidates(
            self.candidates,
            configured,
            self.min_batch_size,
            self.max_batch_size,
            per_rank,
            self.min_steps_per_epoch,
        )
        self.dropped = {str(b): why for b, why in plan.dropped.items()}
        if len(plan.sizes) < 2:
            self.step_aside(
                f"the train set ({per_rank} samples per rank) allows {len(plan.sizes)} candidate batch "
                f"size(s) with min_steps_per_epoch={self.min_steps_per_epoch}",
                trainer,
            )
            return
        device = trainer.strategy.root_device
        tuner, access = self._borrow_limits(trainer, device) if self.joint_power else (None, None)
        measurements, key = self._measure_or_load(
            trainer, pl_module, meter, plan.sizes, device, loader, tuner, access
        )
        if measurements is None:  # the card refused a change mid-search: sequential, at the current limit
            access = None
            measurements, key = self._measure_or_load(trainer, pl_module, meter, plan.sizes, device, loader)
        assert measurements is not None
        del loader
        if self.profile == "measured":
            datamodule.batch_size = configured
        self.memory_limit_bytes = _memory_limit(device, self.max_memory_fraction)
        rule = Rule(self.selector, self.eta, self.max_slowdown, trainer.world_size)
        if access is not None:
            max_power = float(access.max_limit_W * trainer.world_size)
        else:
            max_power = _card_max_power_W(meter, trainer.world_size) if self.selector == "zeus_cost" else None

        def decide() -> Choice | PairChoice | str:
            try:
                if access is not None:
                    return choose_pair(measurements, rule, configured, self.memory_limit_bytes, max_power)
                return choose(measurements, rule, configured, self.memory_limit_bytes, max_power)
            except (ValueError, MeasurementRejected) as err:
                return str(err)

        choice = decide_on_rank_zero(decide)
        self.records = [self._record(m, choice) for m in measurements]
        if isinstance(choice, str):
            if tuner is not None and access is not None:
                tuner.return_limits(trainer, "the joint search chose nothing")
            self.step_aside(f"no batch size to choose: {choice}", trainer)
            return
        if self.profile == "measured" and trainer.is_global_zero:
            cache.save_profile(self.profile_file, key, measurements)
        if isinstance(choice, PairChoice):
            self.joint, self.limit_W = True, choice.limit_W
        self._apply(trainer, datamodule, choice.batch_size, configured)
        if isinstance(choice, PairChoice) and tuner is not None:
            tuner.adopt_limit(
                trainer, choice.limit_W, JOINT_SOURCE, self._selector_text(), cached=self.profile == "cached"
            )
        self.status = STATUS_ACTIVE

    def _measure_or_load(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        meter: Any,
        sizes: Sequence[int],
        device: torch.device,
        loader: Any,
        tuner: PowerLimitLender | None = None,
        access: LimitAccess | None = None,
    ) -> tuple[list[CandidateMeasurement] | None, dict[str, Any]]:
        """The profile: cached (rank 0's file for every rank) or measured; None where the card refused."""
        key = cache.profile_key(
            device=_device_name(device),
            net=net_signature(pl_module),
            input_shape=_input_shape(loader),
            precision=str(trainer.precision),
            world_size=trainer.world_size,
            candidates=list(sizes),
            warmup_steps=self.warmup_steps,
            measure_steps=self.measure_steps,
            optimizers=[type(o).__name__ for o in trainer.optimizers],
            meter_source=str(self.energy_source),
            limits_W=list(access.limits_W) if access is not None else None,
        )
        self.profile_file = cache.profile_path(self.profile_dir, key)
        # rank 0's cache for every rank: all search, or none does
        cached = decide_on_rank_zero(lambda: cache.load_cached(self.profile_file, key))
        if cached is not None:
            self.profile = "cached"
            if trainer.is_global_zero:
                log.info("batch_size: cached %sprofile %s", "joint " if access else "", self.profile_file)
            return cached, key
        self.profile = "measured"
        try:
            return self._search(trainer, pl_module, meter, sizes, device, access), key
        except GpuError as err:
            if tuner is None or access is None:
                raise
            tuner.return_limits(trainer, "the card refused a change during the joint search")
            self.joint_fallback = f"the card refused a power-limit change during the joint search ({err})"
            if trainer.is_global_zero:
                log.warning(
                    "batch_size: joint_power: %s; searching at the current limit.", self.joint_fallback
                )
            return None, key

    def _borrow_limits(
        self, trainer: L.Trainer, device: torch.device
    ) -> tuple[PowerLimitLender | None, LimitAccess | None]:
        """The power tuner's grid and card for the joint search, on every rank or none (one line if not)."""
        tuner: PowerLimitLender | None = self.services.get("power_limits")  # handed in: services.py
        lent = tuner.lend_limits(trainer) if tuner is not None else "there is no power tuner (+optim=power)"
        why = lent if isinstance(lent, str) else None
        if any_rank(why is not None, device):
            if tuner is not None and not isinstance(lent, str):
                tuner.return_limits(trainer, "another rank cannot join the joint search")
            self.joint_fallback = why or "another rank cannot change its power limit"
            if trainer.is_global_zero:
                log.warning(
                    "batch_size: joint_power is on, but %s: searching batch sizes at the current limit "
                    "(sequential: a power tuner profiles limits at the chosen size).",
                    self.joint_fallback,
                )
            return None, None
        assert tuner is not None and not isinstance(lent, str)
        limits = decide_on_rank_zero(lambda: lent.limits_W)  # rank 0's grid: all ranks change together
        return tuner, replace(lent, limits_W=tuple(limits))

    # ---- the steps ------------------------------------------------------------------------------
    def _search(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        meter: Any,
        sizes: Sequence[int],
        device: torch.device,
        access: LimitAccess | None = None,
    ) -> list[CandidateMeasurement]:
        """Measure every candidate (at every lent limit), then put the net, optimizers and RNG back."""
        measure = self.measure or StepMeasurer(
            trainer, pl_module, meter, self.warmup_steps, self.measure_steps
        )
        window = f"{KEY_PREFIX}.search"
        started = time.perf_counter()
        if meter is not None:
            meter.begin(window)
        state = snapshot(trainer, pl_module)
        try:
            if access is not None:
                local = search_joint(
                    sizes, access.limits_W, access.set_limit, access.warmup_steps, measure, device
                )
            else:
                local = search(sizes, measure, device)
        finally:
            restore(state, trainer, pl_module)
            reading = meter.end(window) if meter is not None else None
        measurements = pool(local, device)
        spent = pool(
            [
                CandidateMeasurement(
                    0, 1, 1, reading.total_J if reading else None, time.perf_counter() - started, None
                )
            ],
            device,
        )[0]
        self.search_J, self.search_s = spent.energy_J, spent.time_s
        return measurements

    def _apply(self, trainer: L.Trainer, datamodule: Any, chosen: int, configured: int) -> None:
        """Train at `chosen`: the datamodule's batch size, the LR by the rule, one log line."""
        datamodule.batch_size = chosen
        _forget_train_loader(trainer)
        scaling = scale_learning_rates(
            self.lr_scaling, trainer.optimizers, trainer.lr_scheduler_configs, chosen, configured
        )
        self.chosen = chosen
        self.lr_before, self.lr_after, self.lr_rule = scaling.lr_before, scaling.lr_after, scaling.rule
        if trainer.is_global_zero:
            table = "; ".join(
                f"{r['batch_size']}"
                + (f" at {r['limit_W']} W" if "limit_W" in r else "")
                + ": "
                + (
                    f"{r['J_per_sample']:.4g} J, {r['s_per_sample']:.3g} s per sample"
                    if r["infeasible"] is None
                    else r["infeasible"]
                )
                for r in self.records
            )
            estimate = (
                " (energy figures are ESTIMATES: energy source `estimate`)"
                if self.energy_source == "estimate"
                else ""
            )
            memory = "" if self.memory_limit_bytes is not None else "; memory not measured on the CPU"
            if self.dropped:
                memory += f"; not tried: {', '.join(self.dropped)} ({next(iter(self.dropped.values()))})"
            log.info(
                "batch_size: training at batch size %d%s (configured %d), chosen by %s%s from the %s "
                "profile: %s%s; learning rate %.4g -> %.4g (%s)%s",
                chosen,
                f" and power limit {self.limit_W} W (joint search)" if self.joint else "",
                configured,
                self._selector_text(),
                estimate,
                self.profile,
                table,
                memory,
                self.lr_before or float("nan"),
                self.lr_after or float("nan"),
                self.lr_rule,
                f"; search {self.search_J:.4g} J, {self.search_s:.3g} s" if self.search_J else "",
            )

    def _resume(self, trainer: L.Trainer, datamodule: Any, saved: dict[str, Any]) -> None:
        """A resumed run: the saved size again; the LR is already scaled in the restored optimizer."""
        for field in (
            "chosen",
            "configured",
            "lr_before",
            "lr_after",
            "lr_rule",
            "profile",
            "search_J",
            "search_s",
            "memory_limit_bytes",
            "energy_source",
        ):
            setattr(self, field, saved.get(field))
        self.records = [dict(r) for r in saved.get("candidates") or []]
        self.dropped = dict(saved.get("not_tried") or {})
        self.joint, self.limit_W = bool(saved.get("joint")), saved.get("limit_W")
        self.profile_file = Path(saved["profile_file"]) if saved.get("profile_file") else None
        datamodule.batch_size = self.chosen
        _forget_train_loader(trainer)
        if self.joint and self.limit_W is not None and self.joint_power:  # the saved limit again
            tuner, access = self._borrow_limits(trainer, trainer.strategy.root_device)
            if tuner is not None and access is not None:
                tuner.adopt_limit(
                    trainer, int(self.limit_W), JOINT_SOURCE, self._selector_text(), cached=True
                )
            else:
                self.joint, self.limit_W = False, None
        self.status = STATUS_ACTIVE
        if trainer.is_global_zero:
            log.info(
                "batch_size: resumed at batch size %d from the checkpoint (no search; the learning rate "
                "%.4g comes with the optimizer's saved state)",
                self.chosen,
                self.lr_after or float("nan"),
            )

    def _record(self, m: CandidateMeasurement, choice: Choice | PairChoice | str) -> dict[str, Any]:
        r = m.as_record()
        out = {k: r[k] for k in ("batch_size", "J_per_sample", "s_per_sample", "peak_memory_bytes", "oom")}
        if m.limit_W is not None:
            out["limit_W"] = m.limit_W
        out["infeasible"] = infeasible_reason(m, self.memory_limit_bytes)
        if isinstance(choice, Choice):
            out["cost"] = choice.costs.get(m.batch_size)
        elif isinstance(choice, PairChoice) and m.limit_W is not None:
            out["cost"] = choice.costs.get((m.batch_size, m.limit_W))
        return out

    def _selector_text(self) -> str:
        if self.selector == "zeus_cost":
            return f"zeus_cost(eta={self.eta}) per sample"
        if self.selector == "max_slowdown":
            return f"max_slowdown({self.max_slowdown}) per sample"
        return f"{self.selector} per sample"

    # ---- results ----------------------------------------------------------------------------
    def method_figures(self) -> dict[str, Any]:
        """What `state_dict` keeps, as `batch_size/<key>` figures, plus the selector and any fallback."""
        if self.chosen is None:
            return {}
        return {
            **{f"{self.figure_prefix}{k}": v for k, v in self.state_dict().items()},
            "batch_size/selector": self._selector_text(),
            **({"batch_size/joint_fallback": self.joint_fallback} if self.joint_fallback else {}),
        }

    @classmethod
    def report_rows(cls, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        rows = super().report_rows(summary)
        if rows or summary.get("batch_size/chosen") is None:
            return rows
        before, after = summary.get("batch_size/lr_before"), summary.get("batch_size/lr_after")
        lr = (
            f"; lr {before:.3g} -> {after:.3g} ({summary.get('batch_size/lr_rule')})"
            if before and after
            else ""
        )
        limit = summary.get("batch_size/limit_W")
        text = (
            f"{summary['batch_size/chosen']}{f' at {limit} W' if limit else ''} "
            f"(configured {summary.get('batch_size/configured')}; "
            f"{summary.get('batch_size/selector')}, {summary.get('batch_size/profile')} profile{lr})"
        )
        rows.append(("batch size (batch_size)", text))
        search_J = summary.get("batch_size/search_J")
        if search_J:
            estimate = " (estimate)" if summary.get("batch_size/energy_source") == "estimate" else ""
            rows.append(
                ("batch-size search", f"{search_J:.4g} J{estimate}, {summary['batch_size/search_s']:.3g} s")
            )
        return rows


# ---- helpers ------------------------------------------------------------------------------------
def _dataset_len(loader: Any) -> int | None:
    """Train samples in the loader's dataset (None where it has no length: an iterable dataset)."""
    try:
        return len(loader.dataset)
    except (TypeError, AttributeError):
        return None


def _input_shape(loader: Any) -> list[int] | None:
    """One sample's input shape (the first tensor of the dataset's first item), for the cache key."""
    try:
        first: Any = loader.dataset[0]
    except (TypeError, IndexError, KeyError, AttributeError, NotImplementedError):
        return None
    while isinstance(first, list | tuple | dict) and first:
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    return list(first.shape) if hasattr(first, "shape") else None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}-{platform.machine()}-{torch.get_num_threads()}threads"


def _memory_limit(device: torch.device, fraction: float) -> int | None:
    """`fraction` of the device's memory; None on the CPU (its memory is not measured)."""
    if device.type != "cuda":
        return None
    return int(fraction * torch.cuda.get_device_properties(device).total_memory)


def _card_max_power_W(meter: Any, world_size: int) -> float | None:
    """The card's maximum power limit times the ranks (Zeus's max_power), where Zeus can read it."""
    monitor = getattr(meter, "zeus_monitor", None)
    if monitor is None or not getattr(monitor, "gpu_indices", None):
        return None
    try:
        _, high_mW = monitor.gpus.get_power_management_limit_constraints(monitor.gpu_indices[0])
    except Exception:  # no power management on this card: the measured peak power is used
        return None
    return float(high_mW) / 1000.0 * world_size


def _forget_train_loader(trainer: L.Trainer) -> None:
    """A train loader built before fit start (`estimated_stepping_batches`) is rebuilt at the new size."""
    compat_lightning.forget_train_loader(trainer)


__all__: Sequence[str] = ["BatchSize"]
