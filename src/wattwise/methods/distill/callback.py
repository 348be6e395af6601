"""Knowledge distillation, `+optim=distill`: train the configured net (the student) against a teacher.

Card (with the benchmark): the card (methods/distill/README.md). The loss is Hinton's,
`alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels)`,
added through the module's `loss_terms` (training steps only: `val/loss` stays the plain
cross-entropy, comparable across runs). The teacher is a run dir or `.ckpt` of an earlier
wattwise run, or any `_target_` net (with `teacher_weights`); one whose outputs do not fit the task
is refused in one line. It lives in this callback, never in the student: not in the student's
checkpoint, MAC counts (`prune/macs`), pruning graph or power-profile key; eval mode, no
gradients, on the student's device and under its precision (the same autocast as the step).

`cache=true` computes the teacher's logits for the training set once, stores them next to the
teacher (see `methods/distill/cache.py`) and looks them up by sample content in every later run and
sweep job. The teacher's forward passes are metered separately (`distill/teacher_J`) and the
summary states the break-even against a from-scratch student (`methods/distill/accounting.py`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from omegaconf import DictConfig

from wattwise.methods.base import STATUS_ACTIVE, EnergyMethod
from wattwise.methods.distill import accounting, cache
from wattwise.methods.distill.loss import hinton_loss
from wattwise.methods.distill.teacher import Teacher, check_outputs, load_teacher
from wattwise.methods.shared.settings import Check, MethodSettings, boolean, number, setting
from wattwise.utils.errors import ConfigError

log = logging.getLogger(__name__)

KEY = "callbacks.distill"
_WINDOW = "wattwise.distill.teacher"


# A file or folder: a non-empty string or a path object (the code reads them with Path(...)).
PATH = Check(lambda v: isinstance(v, os.PathLike) or (isinstance(v, str) and bool(v)), "a path", ("", 3))


@dataclass(frozen=True)
class DistillSettings(MethodSettings):
    """`callbacks.distill.*`: the keys, their defaults and their checks (see Distill's Args).

    `temperature` and `alpha` keep the wording their messages had before the shared validators
    (`must be > 0`, `must be in [0, 1]`). A missing teacher is not an error here: the method
    steps aside (a sweep over every method has none to give).
    """

    teacher: Any = setting(None, doc="a wattwise run dir, a .ckpt of one, or {_target_: <net class>, ...}")
    teacher_weights: str | os.PathLike | None = setting(
        None, PATH, optional=True, doc="a _target_ teacher's weights"
    )
    temperature: float = setting(
        4.0,
        dataclasses.replace(number(low=0, strict=True), expects="> 0"),
        doc="softening of both nets' logits",
    )
    alpha: float = setting(
        0.9, dataclasses.replace(number(low=0, high=1), expects="in [0, 1]"), doc="the soft term's weight"
    )
    cache: bool = setting(False, boolean(), doc="the teacher's logits for the training set computed once")
    cache_dir: str | os.PathLike | None = setting(
        None, PATH, optional=True, doc="null: next to the teacher's checkpoint"
    )
    baseline: str | os.PathLike | None = setting(
        None, PATH, optional=True, doc="a from-scratch run, for the break-even"
    )
    count_teacher_training: bool = setting(
        True, boolean(), doc="false: the teacher's training is a sunk cost"
    )

    @classmethod
    def bad_combinations(cls) -> tuple[dict[str, Any], ...]:
        return ({"teacher": {"hidden": [8]}},)  # a node teacher without its _target_

    def check(self, key: str) -> None:
        if isinstance(self.teacher, Mapping | DictConfig) and "_target_" not in self.teacher:
            raise ConfigError(f"{key}.teacher must name its net class: {{_target_: <net class>, ...}}")


class Distill(EnergyMethod):
    """Args (config keys `callbacks.distill.*`, checked by `DistillSettings`):

    teacher: a wattwise run dir, a `.ckpt` of one, or a node `{_target_: <net class>, ...}`.
    teacher_weights: for a `_target_` teacher: a `.ckpt` or a state-dict file (null: its initial
        weights, which only the tests want).
    temperature: T > 0, the softening of both nets' logits.
    alpha: in [0, 1], the soft term's weight (0: plain cross-entropy).
    cache: compute the teacher's logits for the training set once and reuse them.
    cache_dir: where the cache lives (null: next to the teacher's checkpoint; required for a
        `_target_` teacher without `teacher_weights`).
    baseline: a from-scratch run of the same student (run dir or summary.json), for the break-even.
    count_teacher_training: add the teacher's own training energy to the one-off cost (false: the
        teacher existed anyway, a sunk cost).
    """

    name = "distill"
    figure_prefix = "distill/"
    summary_keys: ClassVar[tuple[str, ...]] = (
        "distill/teacher_J",
        "distill/teacher_forwards",
        "distill/teacher_train_J",
        "distill/break_even_runs",
    )
    # No recipes: green would need a teacher the user has to supply (and distillation often
    # spends more than it saves), so it is never switched on behind the user's back.
    recipes: ClassVar[dict[str, dict[str, Any]]] = {}
    # Nor in sweeps, the Optuna search or `make bench`: without the user's teacher the job could
    # only stop; bench/distill_bench.py trains a teacher and compares against it.
    in_comparisons = False

    def __init__(
        self,
        teacher: Any = None,
        teacher_weights: str | None = None,
        temperature: float = 4.0,
        alpha: float = 0.9,
        cache: bool = False,
        cache_dir: str | None = None,
        baseline: str | None = None,
        count_teacher_training: bool = True,
        if_not_applicable: str = "fail",
    ) -> None:
        super().__init__(if_not_applicable)
        self.settings = s = DistillSettings.build(
            KEY, **{k: v for k, v in locals().items() if k in DistillSettings.__dataclass_fields__}
        )
        if s.teacher is None:  # a sweep or benchmark over every method, without a teacher: skip says so
            self.step_aside(
                f"no teacher given: set {KEY}.teacher=<a wattwise run dir, a .ckpt, or {{_target_: ...}}>"
            )
        self.teacher_spec, self.teacher_weights = s.teacher, s.teacher_weights
        self.temperature, self.alpha = s.temperature, s.alpha
        self.use_cache, self.cache_dir = s.cache, s.cache_dir
        self.baseline = accounting.read_baseline(s.baseline)
        self.count_teacher_training = s.count_teacher_training
        self.teacher: Teacher | None = None
        self._cache: cache.LogitCache | None = None
        self._cache_file: Path | None = None
        self._meter: Any = None
        self._monitor: Any = None
        self._module: Any = None
        self._reset_counts()

    def _reset_counts(self) -> None:
        self.teacher_J: float = 0.0  # metered by window (estimate, RAPL)
        self.teacher_s: float = 0.0  # wall seconds in teacher forwards (synchronised on a GPU)
        self.teacher_forwards = 0  # batches the teacher ran on (training and cache building)
        self.teacher_samples = 0
        self.cache_build_J: float | None = None  # what building the cache cost (whoever built it)
        self.cache_built_here = False

    # ---- checkpoint state: counters only, never the teacher ------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "teacher_J": self.teacher_J,
            "teacher_s": self.teacher_s,
            "teacher_forwards": self.teacher_forwards,
            "teacher_samples": self.teacher_samples,
            "cache_build_J": self.cache_build_J,
            "cache_built_here": self.cache_built_here,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for k, v in state_dict.items():
            setattr(self, k, v)

    # ---- set-up -------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Build and check the teacher, build or load the cache, register the loss term."""
        if not self.active:
            return
        if not isinstance(getattr(pl_module, "loss_terms", None), list):
            self.step_aside("the module has no `loss_terms` list to add the distillation loss to", trainer)
            return
        self._monitor = self.energy_monitor
        self._meter = getattr(self._monitor, "meter", None)
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None:
            self.step_aside("the training data is not a DataLoader over a dataset", trainer)
            return
        num_classes = getattr(trainer.datamodule, "num_classes", None) or pl_module.hparams.get("num_classes")
        facts = {"input_shape": getattr(trainer.datamodule, "input_shape", None), "num_classes": num_classes}
        with torch.random.fork_rng(devices=[]):  # the student's run draws the same numbers as without
            self.teacher = load_teacher(self.teacher_spec, self.teacher_weights, facts)
        net = trainer.strategy.precision_plugin.convert_module(self.teacher.net).to(pl_module.device)
        self.teacher.net = net
        example = loader.collate_fn([dataset[i] for i in range(min(2, len(dataset)))])
        x = example[0] if isinstance(example, list | tuple) else example
        with trainer.strategy.precision_plugin.train_step_context():
            check_outputs(net, x.to(pl_module.device), num_classes)
        if self.use_cache:
            self._prepare_cache(trainer, loader, pl_module.device)
        self._module = pl_module
        pl_module.loss_terms.append(self.loss_term)
        self.status = STATUS_ACTIVE
        if trainer.is_global_zero:
            log.info(
                "distill: teacher %s, T=%g, alpha=%g, %s",
                self.teacher.described,
                self.temperature,
                self.alpha,
                f"cached logits {self._cache_file}" if self._cache is not None else "teacher run every step",
            )

    def _cache_home(self) -> Path:
        assert self.teacher is not None
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser()
        if self.teacher.home is None:
            raise ConfigError(
                f"{KEY}.cache_dir is required with cache=true for a teacher with no checkpoint "
                "(nowhere to store its logits next to)"
            )
        return self.teacher.home / "distill_cache"

    def _prepare_cache(self, trainer: L.Trainer, loader: Any, device: torch.device) -> None:
        """Load the cache for this teacher and training set, or build it (one pass, metered)."""
        from torch.utils.data import DataLoader

        assert self.teacher is not None
        cache.check_repeatable(loader.dataset)
        ordered = DataLoader(
            loader.dataset, batch_size=loader.batch_size or 256, shuffle=False, collate_fn=loader.collate_fn
        )  # sequential: draws no random numbers

        def inputs():  # noqa: ANN202
            for batch in ordered:
                yield (batch[0] if isinstance(batch, list | tuple) else batch).to(device)

        precision = str(trainer.precision)
        with torch.random.fork_rng(devices=[]):  # a DataLoader draws its base seed from torch's RNG
            data_sha = cache.data_sha256(cache.sorted_unique_keys(inputs()))
        path = cache.cache_path(
            self._cache_home(), self.teacher.weights_sha256, data_sha, device.type, precision
        )
        found = cache.load(path)
        if found is None:
            context = trainer.strategy.precision_plugin.train_step_context()
            with torch.random.fork_rng(devices=[]), context:
                (keys, logits), reading = self._metered(lambda: cache.build(inputs(), self._forward))
            found = cache.LogitCache(
                keys,
                logits,
                {
                    "teacher": self.teacher.described,
                    "data_sha256": data_sha,
                    "precision": precision,
                    "device": device.type,
                    "build_J": reading,
                    "samples": len(keys),
                },
            )
            cache.save(path, found)
            self.cache_built_here = True
            log.info("distill: built the teacher's logit cache for %d samples in %s", len(keys), path)
        self.cache_build_J = found.meta.get("build_J")
        self._cache = found.to(device)
        self._cache_file = path

    # ---- the teacher's forward passes, metered -------------------------------------------------
    def _by_window(self) -> bool:
        """Per-forward meter windows where they are exact at this scale (estimate, RAPL); on a GPU's
        energy counter, windows of one step read ~0 J, so the fit's average power x teacher time."""
        return self._meter is not None and self._meter.source in ("estimate", "zeus-rapl")

    def _metered(self, fn: Any) -> tuple[Any, float | None]:
        """Run fn, adding its cost to teacher_J/teacher_s; returns (its result, its joules if windowed)."""
        windowed = self._by_window()
        cuda = (
            torch.cuda.is_available()
            and self.teacher is not None
            and next(self.teacher.net.parameters(), torch.empty(0)).is_cuda
        )
        if cuda:
            torch.cuda.synchronize()
        if windowed:
            self._meter.begin(_WINDOW)
        start = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        self.teacher_s += time.perf_counter() - start
        joules = None
        if windowed:
            joules = self._meter.end(_WINDOW).total_J
            self.teacher_J += joules or 0.0
        return out, joules

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.teacher is not None
        with torch.no_grad():
            out = self.teacher.net(x)
        self.teacher_forwards += 1
        self.teacher_samples += int(x.shape[0])
        return out

    # ---- the loss term ---------------------------------------------------------------------------
    def loss_term(self, loss: torch.Tensor, logits: torch.Tensor, batch: Any, stage: str) -> torch.Tensor:
        """The module's cross-entropy -> Hinton's loss, on training steps only."""
        if stage != "train" or not self.active or self.alpha == 0.0:
            return loss
        x, y = batch[0], batch[1]
        if self._cache is not None:
            teacher_logits = self._cache.lookup(x)
        else:
            teacher_logits, _ = self._metered(lambda: self._forward(x))
        return hinton_loss(logits, teacher_logits, y, self.temperature, self.alpha, hard_loss=loss)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or self.teacher is None:
            return
        figures = {
            k: float(v)
            for k, v in self.method_figures().items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        pl_module.log_dict(figures, on_step=False, on_epoch=True, rank_zero_only=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._module is not None and self.loss_term in self._module.loss_terms:
            self._module.loss_terms.remove(self.loss_term)

    # ---- results ---------------------------------------------------------------------------------
    def _teacher_J(self) -> float | None:
        if self._meter is None or self._meter.source == "off":
            return None
        if self._by_window():
            return self.teacher_J
        total, seconds = getattr(self._monitor, "total_J", None), getattr(self._monitor, "time_s", 0.0)
        return total / seconds * self.teacher_s if total is not None and seconds > 0 else None

    def method_figures(self) -> dict[str, Any]:
        teacher_summary = self.teacher.summary if self.teacher is not None else None
        teacher_train_J = (teacher_summary or {}).get("energy/total_J")
        run_J = getattr(self._monitor, "total_J", None)
        runs, text = accounting.break_even_runs(
            (self.baseline or {}).get("energy/total_J"),
            run_J,
            teacher_train_J if self.count_teacher_training else None,
            self.cache_build_J,
            self.cache_built_here,
        )
        basis = accounting.BASIS_WINDOW if self._by_window() else accounting.BASIS_TIME_SHARE
        return {
            "distill/teacher_J": self._teacher_J(),
            "distill/teacher_J_basis": basis,
            "distill/teacher_s": self.teacher_s,
            "distill/teacher_forwards": self.teacher_forwards,
            "distill/teacher_samples": self.teacher_samples,
            "distill/cached": self._cache is not None,
            "distill/cache_build_J": self.cache_build_J,
            "distill/cache_built_here": self.cache_built_here,
            "distill/teacher_train_J": teacher_train_J,
            "distill/teacher_train_source": (teacher_summary or {}).get("energy/source"),
            "distill/baseline_J": (self.baseline or {}).get("energy/total_J"),
            "distill/baseline_test_acc": (self.baseline or {}).get("test/acc"),
            "distill/break_even_runs": runs,
            "distill/break_even": text,
            "distill/teacher": self.teacher.described if self.teacher is not None else None,
        }

    @classmethod
    def report_rows(cls, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        rows = super().report_rows(summary)
        if summary.get(f"{cls.name}/status") != STATUS_ACTIVE:
            return rows
        teacher_J = summary.get("distill/teacher_J")
        how = "cached logits" if summary.get("distill/cached") else "teacher every step"
        forwards = summary.get("distill/teacher_forwards", 0)
        if teacher_J is not None:
            rows.append(("teacher (distill)", f"{teacher_J:.3g} J in {forwards} forward passes ({how})"))
        else:
            rows.append(("teacher (distill)", f"{forwards} forward passes ({how}); energy not measured"))
        if summary.get("distill/teacher_train_J") is not None:
            train_J = summary["distill/teacher_train_J"]
            rows.append(("teacher training", f"{train_J:.1f} J (read from its summary.json)"))
        rows.append(("break-even (distill)", str(summary.get("distill/break_even", "-"))))
        return rows
