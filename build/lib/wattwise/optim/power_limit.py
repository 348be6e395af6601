"""GPU power-limit tuning with Zeus (`+optim=power`).

Method card
-----------
What it does
    Drives Zeus's `GlobalPowerLimitOptimizer` from Lightning's hooks. During the first
    training steps it runs a few steps at each power limit the GPU allows (highest first,
    `pl_step_W` apart: `warmup_steps` to settle, then `profile_steps` measured in one Zeus
    window), picks a limit with the chosen selector (`energy`, `time`, `zeus_cost`,
    `max_slowdown`) and trains the rest of the fit at it. The card's original limit (and
    persistence mode) are put back when fit ends, on an exception, on Ctrl-C, on SIGTERM
    (SLURM's `scancel`) and at interpreter exit.
What it saves
    GPU energy: a lower limit caps the power draw while the step time grows less than the
    power falls. Zeus's published traces (V100/A40/RTX6000): ~11-17 % less energy at 4-6 %
    slowdown. Nothing on a CPU-only run.
What it costs
    Profiling time: every limit gets warm-up + profile steps, some at slow low limits
    (H100, 200-700 W every 25 W: 21 limits x 50 steps). A profile is cached per GPU model,
    net, input shape, batch size, precision and world size, so a repeat run skips it. Slower
    steps at the chosen limit when the selector trades time for energy. No accuracy cost.
When not to use it
    Without permission to change limits (no SYS_ADMIN, shared clusters, most containers) it
    can only warn and train at the current limit. On a shared GPU it changes a setting other
    jobs feel while it runs. Runs shorter than the profile gain nothing. Benchmarks and GPU
    checks of this project use `dry_run: true`, which changes nothing.
How it composes
    Reads time and energy through the run's single Zeus monitor (the EnergyMonitor's
    `meter.zeus_monitor`; Zeus windows are named `__GlobalPowerLimitOptimizer_<W>` and do not
    collide with the monitor's). Re-profiles when the net changes shape (after a prune by
    `+optim=prune`). Mixed precision changes the profile key, so it composes with `amp`.
    Under DDP each process tunes its own GPU; Zeus all-reduces the measurements so every rank
    picks the same limit, and `zeus_cost` is given the world size.

Short epochs: Zeus restarts a limit whose warm-up + profile is cut by the end of an epoch
(or by a validation run), so an epoch shorter than that would never finish a profile. This
callback shrinks the warm-up and profile counts to fit the epoch (logged), and the limits
are then profiled across epochs, a few per epoch.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import os
import re
import signal
import threading
import types
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L

from wattwise.energy.monitor import batch_size_of, find_energy_monitor
from wattwise.optim.base import EnergyMethod

log = logging.getLogger(__name__)

SELECTORS = ("energy", "time", "zeus_cost", "max_slowdown")
PROFILE_FORMAT = 1

# Values of `power/status` (summary.json).
STATUS_NO_GPU = "no_gpu"  # no GPU under Zeus: the option does nothing here
STATUS_NO_METER = "no_meter"  # a GPU, but energy=estimate/off (or no monitor): nothing to measure with
STATUS_DRY_RUN = "dry_run"  # reported what it would do, changed nothing
STATUS_NO_PERMISSION = "no_permission"  # not allowed to change limits: trained at the current one
STATUS_PROFILING = "profiling"  # still profiling
STATUS_INCOMPLETE = "incomplete"  # fit ended before every limit was profiled
STATUS_TUNED = "tuned"  # profiled, chose, trained at the choice
STATUS_CACHED = "cached"  # a cached profile chose; no profiling
STATUS_EPOCH_TOO_SHORT = "epoch_too_short"  # fewer than 3 training batches per epoch
ZERO_ENERGY_HINT = (
    "a profile window read 0 J (shorter than the GPU energy counter's update period); "
    "raise callbacks.power.profile_steps or the batch size so each window lasts longer"
)
STATUS_ERROR = "error"  # the GPU refused something else; trained at the original limit


def make_selector(name: str, eta: float = 0.5, max_slowdown: float = 1.1, world_size: int = 1) -> Any:
    """Zeus's optimum selector for `name`; `world_size` keeps `zeus_cost` unbiased under DDP."""
    from zeus.optimizer.power_limit import Energy, MaxSlowdownConstraint, Time, ZeusCost

    if name == "energy":
        return Energy()
    if name == "time":
        return Time()
    if name == "zeus_cost":
        return ZeusCost(eta_knob=eta, world_size=world_size)
    if name == "max_slowdown":
        return MaxSlowdownConstraint(factor=max_slowdown)
    raise ValueError(f"callbacks.power.selector must be one of {', '.join(SELECTORS)}, got {name!r}")


def net_signature(module: Any) -> str:
    """A short hash of the net's structure: module types and parameter names and shapes.

    Shapes are metadata: computing this never touches the device.
    """
    h = hashlib.sha1()
    for m in module.modules():
        h.update(type(m).__name__.encode())
    for name, p in module.named_parameters():
        h.update(f"{name}:{tuple(p.shape)};".encode())
    return h.hexdigest()[:12]


def fit_counts(batches_per_epoch: float, wait: int, warmup: int, profile: int) -> tuple[int, int, int] | None:
    """Wait, warm-up and profile steps that let one limit finish inside an epoch.

    Zeus needs 1 + warm-up + profile steps in an epoch for a limit (plus the wait steps
    in the first one), else the epoch end restarts it, forever. Shrinks the counts to
    fit, keeping their ratio; None when the epoch is too short (under 3 batches).
    """
    if not math.isfinite(batches_per_epoch):
        return wait, warmup, profile
    n = int(batches_per_epoch)
    budget = n - 1 - wait
    if budget < 2:
        wait, budget = 0, n - 1
    if budget < 2:
        return None
    if warmup + profile <= budget:
        return wait, warmup, profile
    new_profile = max(1, min(budget - 1, int(budget * profile / (warmup + profile))))
    return wait, max(1, budget - new_profile), new_profile


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "gpu"


class PowerLimitTuner(EnergyMethod):
    """Chooses the GPU's power limit with Zeus and restores the original one afterwards.

    Args (config keys `callbacks.power.*`):
        selector: `energy`, `time`, `zeus_cost` or `max_slowdown`.
        eta: `zeus_cost`'s weight on energy against time, in [0, 1].
        max_slowdown: `max_slowdown`'s largest allowed step-time factor against the
            highest limit, >= 1.
        wait_steps: steps to let pass before profiling (cudnn autotuning, compilation).
        warmup_steps: steps at each limit before measuring, >= 1.
        profile_steps: measured steps at each limit, >= 1.
        pl_step_W: watts between the limits tried.
        profile_dir: where profiles are cached (null: no cache).
        reprofile_on_change: profile again when the net changes shape (a prune).
        dry_run: change nothing; report the limits it would try and what it would choose
            from a cached profile.
    """

    name = "power"
    figure_prefix = "power/"
    recipes = {"green": {}}

    def __init__(
        self,
        selector: str = "max_slowdown",
        eta: float = 0.5,
        max_slowdown: float = 1.1,
        wait_steps: int = 1,
        warmup_steps: int = 10,
        profile_steps: int = 40,
        pl_step_W: int = 25,
        profile_dir: str | None = None,
        reprofile_on_change: bool = True,
        dry_run: bool = False,
        if_not_applicable: str = "fail",
    ) -> None:
        super().__init__(if_not_applicable)
        if selector not in SELECTORS:
            raise ValueError(
                f"callbacks.power.selector must be one of {', '.join(SELECTORS)}, got {selector!r}"
            )
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"callbacks.power.eta must be in [0, 1], got {eta}")
        if float(max_slowdown) < 1.0:
            raise ValueError(
                f"callbacks.power.max_slowdown must be >= 1.0 (a step-time factor), got {max_slowdown}"
            )
        for key, value, low in (
            ("wait_steps", wait_steps, 0),
            ("warmup_steps", warmup_steps, 1),
            ("profile_steps", profile_steps, 1),
            ("pl_step_W", pl_step_W, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"callbacks.power.{key} must be an integer >= {low}, got {value!r}")
        self.selector = selector
        self.eta = float(eta)
        self.max_slowdown = float(max_slowdown)
        self.wait_steps = wait_steps
        self.warmup_steps = warmup_steps
        self.profile_steps = profile_steps
        self.pl_step_W = pl_step_W
        self.profile_dir = Path(profile_dir) if profile_dir else None
        self.reprofile_on_change = bool(reprofile_on_change)
        # WATTWISE_POWER_DRY_RUN=1 forces a dry run whatever the config says: a switch for shared
        # clusters and for this project's tests, which must never change a real card's limit.
        self.forced_dry_run = os.environ.get("WATTWISE_POWER_DRY_RUN") == "1" and not dry_run
        self.dry_run = bool(dry_run) or self.forced_dry_run
        self._sigterm_handler = self._on_sigterm  # one bound method, so it can be compared and removed
        self._atexit_hook = self._on_exit
        self._reset()

    # ---- state ----------------------------------------------------------------------------
    def _reset(self) -> None:
        self.status: str = "idle"
        self.chosen_limit_W: int | None = None
        self.original_limit_W: int | None = None
        self.profile: dict[str, dict[str, float]] = {}
        self.limit_log: list[tuple[int, int]] = []  # (global step, watts) at every change
        self.plan: dict[str, Any] | None = None
        self.profile_file: Path | None = None
        self.reprofiles = 0
        self.restored: bool | None = None  # None: nothing was changed, so nothing to restore
        self._touched = False  # Zeus was asked to change something on the card
        self._gpus: Any = None
        self._gpu_index: int | None = None
        self._zeus_monitor: Any = None
        self._original_mW: int | None = None
        self._original_persistence: bool | None = None
        self._constraints_mW: tuple[int, int] | None = None
        self._gpu_name = ""
        self._plo: Any = None
        self._key: dict[str, Any] | None = None
        self._net_sig: str | None = None
        self._counts: tuple[int, int, int] | None = None
        self._active = False  # there is something to do in the batch hook
        self._profiling = False  # Zeus is still profiling (on_step_begin needed)
        self._stopped = False  # after restore: change nothing any more
        self._warned = False
        self._guards = False
        self._prev_sigterm: Any = None

    # ---- Lightning hooks ------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        monitor = find_energy_monitor(trainer)
        zeus_monitor = getattr(getattr(monitor, "meter", None), "zeus_monitor", None)
        on_cuda = trainer.strategy.root_device.type == "cuda"
        if zeus_monitor is None:
            if on_cuda:
                self._say_does_nothing(
                    trainer,
                    STATUS_NO_METER,
                    "power-limit tuning needs the Zeus energy meter (energy=auto); "
                    "with energy=estimate/off it does nothing",
                )
            else:
                self._say_does_nothing(trainer, STATUS_NO_GPU, "no GPU here: +optim=power does nothing")
            return
        if not zeus_monitor.gpu_indices:
            self._say_does_nothing(
                trainer, STATUS_NO_GPU, "no GPU visible to Zeus: +optim=power does nothing"
            )
            return
        from zeus.device import get_gpus
        from zeus.device.exception import ZeusBaseGPUError

        i = zeus_monitor.gpu_indices[0]
        gpus = get_gpus()
        try:  # reads only
            self._gpu_name = gpus.get_name(i)
            self._constraints_mW = tuple(gpus.get_power_management_limit_constraints(i))
            self._original_mW = int(gpus.get_power_management_limit(i))
        except ZeusBaseGPUError as err:  # e.g. a GPU without power management
            self._say_does_nothing(trainer, STATUS_ERROR, f"cannot read GPU {i}'s power limits ({err})")
            return
        self._zeus_monitor, self._gpu_index, self._gpus = zeus_monitor, i, gpus
        self.original_limit_W = self._original_mW // 1000
        self.status = STATUS_PROFILING
        self._active = True

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._active:
            return
        if self._plo is None:
            self._start(trainer, pl_module, batch, batch_idx)
        elif batch_idx == 0 and self.reprofile_on_change and net_signature(pl_module) != self._net_sig:
            self._restart(trainer, pl_module, batch, batch_idx)
        if self._profiling:
            self._step(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A validation run inside a profile would be timed with it: cut the profile like an epoch end.
        self._epoch_end(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_end(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before Lightning's teardown puts back the signal handlers it found (ours goes with them).
        self._finish_fit("fit end")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish_fit("fit end")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._finish_fit(f"{type(exception).__name__}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._finish_fit("teardown")
            self._remove_guards()

    # ---- starting ---------------------------------------------------------------------------
    def _say_does_nothing(self, trainer: L.Trainer, status: str, message: str) -> None:
        self.status = status
        if trainer.is_global_zero:
            log.warning("%s; the run proceeds.", message)

    def _profile_key(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> dict[str, Any]:
        first = batch
        while isinstance(first, list | tuple | dict) and first:
            first = next(iter(first.values())) if isinstance(first, dict) else first[0]
        input_shape = list(first.shape[1:]) if hasattr(first, "shape") else None
        assert self._constraints_mW is not None
        return {
            "gpu": self._gpu_name,
            "net": self._net_sig,
            "input_shape": input_shape,
            "batch_size": batch_size_of(batch),
            "precision": str(trainer.precision),
            "world_size": trainer.world_size,
            "pl_step_W": self.pl_step_W,
            "limits_mW": list(self._constraints_mW),
        }

    def _profile_path(self, key: dict[str, Any]) -> Path | None:
        if self.profile_dir is None:
            return None
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        gpu, precision = _slug(key["gpu"]), _slug(key["precision"])
        return self.profile_dir / f"{gpu}-net{key['net']}-bs{key['batch_size']}-{precision}-{digest}.json"

    def _load_cached(self, path: Path | None) -> list[dict[str, float]] | None:
        """The cached measurements, or None (missing, unreadable or not a profile: profile again)."""
        if path is None or not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            measurements = data["measurements"]
            if not measurements or not all(
                m["power_limit"] > 0 and m["energy"] > 0 and m["time"] > 0 for m in measurements
            ):
                raise ValueError("empty or non-positive measurements")
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("Ignoring the unreadable power profile %s (%s); profiling again.", path, err)
            return None
        return measurements

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._net_sig = net_signature(pl_module)
        self._key = self._profile_key(trainer, pl_module, batch)
        self.profile_file = self._profile_path(self._key)
        cached = self._load_cached(self.profile_file)
        self._counts = fit_counts(
            trainer.num_training_batches, self.wait_steps, self.warmup_steps, self.profile_steps
        )
        if self._counts is None and cached is not None:  # nothing to profile: the counts do not matter
            self._counts = (self.wait_steps, self.warmup_steps, self.profile_steps)
        if self._counts is None and cached is None:
            self._active = False
            self.status = STATUS_EPOCH_TOO_SHORT
            log.warning(
                "An epoch of %s training batches is too short to profile power limits (3 or more needed); "
                "+optim=power leaves the limit at %d W.",
                trainer.num_training_batches,
                self.original_limit_W,
            )
            return
        if self._counts is not None and self._counts != (
            self.wait_steps,
            self.warmup_steps,
            self.profile_steps,
        ):
            log.info(
                "An epoch has %d training batches, too few for %d wait + %d warm-up + %d profile steps per "
                "limit: using %d + %d + %d, so each limit's profile fits inside an epoch.",
                trainer.num_training_batches,
                self.wait_steps,
                self.warmup_steps,
                self.profile_steps,
                *self._counts,
            )
        if self.dry_run:
            self._report_dry_run(trainer, cached)
            return
        self._install_guards()
        self._build(trainer, cached)

    def _limits_W(self) -> list[int]:
        assert self._constraints_mW is not None
        low, high = self._constraints_mW
        return [mw // 1000 for mw in range(high, low - 1, -self.pl_step_W * 1000)]

    def _report_dry_run(self, trainer: L.Trainer, cached: list[dict[str, float]] | None) -> None:
        """Say what a real run would do. Reads only: no limit, mode or clock is changed."""
        self._active = False
        self.status = STATUS_DRY_RUN
        limits = self._limits_W()
        wait, warmup, profile = self._counts or (self.wait_steps, self.warmup_steps, self.profile_steps)
        would_choose = None
        if cached is not None:
            from zeus.optimizer.power_limit import PowerLimitMeasurement

            selector = make_selector(self.selector, self.eta, self.max_slowdown, trainer.world_size)
            would_choose = int(selector.select([PowerLimitMeasurement(**m) for m in cached]))
        self.plan = {
            "gpu": self._gpu_name,
            "current_limit_W": self.original_limit_W,
            "would_profile_W": limits,
            "wait_steps": wait,
            "warmup_steps": warmup,
            "profile_steps": profile,
            "profiling_steps_total": wait + 1 + len(limits) * (warmup + profile),
            "selector": self._selector_text(),
            "profile_file": str(self.profile_file) if self.profile_file else None,
            "cached_profile": cached is not None,
            "would_choose_W": would_choose,
            "changed": "nothing",
            "forced_by_env": self.forced_dry_run,
        }
        if trainer.is_global_zero:
            log.info(
                "Power dry run on %s (limit now %d W): would profile %s W, %d warm-up + %d profile steps "
                "each (~%d steps), select by %s%s. Nothing was changed%s.",
                self._gpu_name,
                self.original_limit_W,
                ", ".join(map(str, limits)),
                warmup,
                profile,
                self.plan["profiling_steps_total"],
                self._selector_text(),
                f"; the cached profile {self.profile_file} would choose {would_choose} W" if cached else "",
                " (WATTWISE_POWER_DRY_RUN=1 is set)" if self.forced_dry_run else "",
            )

    def _build(self, trainer: L.Trainer, cached: list[dict[str, float]] | None) -> None:
        """Create Zeus's optimizer (it turns persistence mode on and sets the first limit)."""
        import zeus.optimizer.power_limit as zpl
        from zeus.device.exception import ZeusBaseGPUError
        from zeus.device.gpu import ZeusGPUNoPermissionError

        assert self._counts is not None
        wait, warmup, profile = self._counts
        if self._original_persistence is None:
            try:
                self._original_persistence = bool(self._gpus.get_persistence_mode(self._gpu_index))
            except Exception:  # noqa: BLE001 - not every GPU reports it; then it is left alone
                self._original_persistence = None
        logging.getLogger("zeus.optimizer.power_limit").setLevel(logging.WARNING)  # we log the changes
        # Zeus registers an atexit hook that sets the MAXIMUM limit, which would undo our restore of the
        # original one at exit: keep it from being registered (ours restores the original instead).
        self._touched = True
        real_atexit = zpl.atexit
        zpl.atexit = types.SimpleNamespace(register=lambda *args, **kwargs: None)
        try:
            self._plo = zpl.GlobalPowerLimitOptimizer(
                self._zeus_monitor,
                optimum_selector=make_selector(
                    self.selector, self.eta, self.max_slowdown, trainer.world_size
                ),
                wait_steps=wait,
                warmup_steps=warmup,
                profile_steps=profile,
                pl_step=self.pl_step_W,
                profile_path=self.profile_file if cached is not None else None,
            )
        except ZeusGPUNoPermissionError as err:
            self._give_up(trainer, STATUS_NO_PERMISSION, err)
            return
        except ZeusBaseGPUError as err:  # e.g. setting limits not supported on this GPU
            self._give_up(trainer, STATUS_ERROR, err)
            return
        except RuntimeError as err:
            if isinstance(err.__cause__, ZeusGPUNoPermissionError) or "SYS_ADMIN" in str(err):
                self._give_up(trainer, STATUS_NO_PERMISSION, err)
                return
            raise
        finally:
            zpl.atexit = real_atexit
        self._profiling = True
        self._note_limit(trainer, "from cached profile" if cached is not None else "profiling starts")
        if isinstance(self._plo.state, zpl.Done):
            self._done(trainer, from_cache=True)

    def _restart(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        """The net changed shape (pruned): profile again under the new key (or use its cache)."""
        log.info("The net changed shape: profiling power limits again.")
        self._cancel_window()
        self._plo = None
        self._profiling = False
        self.reprofiles += 1
        self.chosen_limit_W = None
        self.profile = {}
        self.status = STATUS_PROFILING
        self._start(trainer, pl_module, batch, batch_idx)

    # ---- stepping ---------------------------------------------------------------------------
    def _step(self, trainer: L.Trainer) -> None:
        from zeus.device.exception import ZeusBaseGPUError
        from zeus.device.gpu import ZeusGPUNoPermissionError

        before = self._plo.current_power_limit
        try:
            self._plo.on_step_begin()
        except ZeusGPUNoPermissionError as err:
            self._give_up(trainer, STATUS_NO_PERMISSION, err)
            return
        except ZeusBaseGPUError as err:
            self._give_up(trainer, STATUS_ERROR, err)
            return
        except ValueError as err:  # Zeus rejects a profile window that read 0 J (pydantic validation)
            self._give_up(trainer, STATUS_ERROR, err, hint=ZERO_ENERGY_HINT)
            return
        if self._stopped:  # SIGTERM arrived inside Zeus's call: make sure its last change is undone
            self._restore("SIGTERM")
            return
        from zeus.optimizer.power_limit import Done

        done = isinstance(self._plo.state, Done)
        if self._plo.current_power_limit != before:
            self._note_limit(trainer, "chosen" if done else "profiling")
        if done:
            self._done(trainer, from_cache=False)

    def _epoch_end(self, trainer: L.Trainer) -> None:
        if not self._profiling or self._plo is None:
            return
        before = self._plo.current_power_limit
        try:
            self._plo.on_epoch_end()
        except ValueError as err:  # as in _step: a cut profile window that read 0 J
            self._give_up(trainer, STATUS_ERROR, err, hint=ZERO_ENERGY_HINT)
            return
        if self._plo.current_power_limit != before:
            self._note_limit(trainer, "profile cut by epoch end/validation; resumes next epoch")

    def _done(self, trainer: L.Trainer, from_cache: bool) -> None:
        self._profiling = False
        self._active = self.reprofile_on_change  # keep watching the net's shape at epoch starts
        self.chosen_limit_W = int(self._plo.state.optimal_power_limit // 1000)
        self.profile = {
            str(m.power_limit): {"time_s": float(m.time), "energy_J": float(m.energy)}
            for m in self._plo.measurements
        }
        self.status = STATUS_CACHED if from_cache else STATUS_TUNED
        if not from_cache and trainer.is_global_zero:
            self._save_profile()
        if trainer.is_global_zero:
            table = "; ".join(
                f"{w} W: {m['time_s']:.3g} s, {m['energy_J']:.4g} J" for w, m in self.profile.items()
            )
            log.info(
                "Power limit %d W chosen by %s%s (original %d W, restored at fit end). Profile: %s",
                self.chosen_limit_W,
                self._selector_text(),
                f" from the cached profile {self.profile_file}" if from_cache else "",
                self.original_limit_W,
                table,
            )

    def _save_profile(self) -> None:
        if self.profile_file is None:
            return
        data = {
            "wattwise_profile_format": PROFILE_FORMAT,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "key": self._key,
            "measurements": [m.dict() for m in self._plo.measurements],
        }
        try:
            self.profile_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.profile_file.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=2) + "\n")
            os.replace(tmp, self.profile_file)
        except OSError as err:
            log.warning("Could not cache the power profile at %s: %s", self.profile_file, err)

    def _note_limit(self, trainer: L.Trainer, why: str) -> None:
        watts = int(self._plo.current_power_limit // 1000)
        self.limit_log.append((trainer.global_step, watts))
        if trainer.is_global_zero:
            log.info("Power limit %d W (%s)", watts, why)
            for lg in trainer.loggers:  # only at changes, never per step
                lg.log_metrics({"power/limit_W": float(watts)}, step=trainer.global_step)

    def _give_up(self, trainer: L.Trainer, status: str, err: BaseException, hint: str = "") -> None:
        """Stop tuning, put back what was changed, keep training at the original limit."""
        self._cancel_window()
        self._plo = None
        self._profiling = False
        self._active = False
        self.status = status
        self._restore(status)
        self._remove_guards()
        if not self._warned:
            self._warned = True
            if status == STATUS_NO_PERMISSION:
                log.warning(
                    "No permission to change the GPU's power limit (%s). Training goes on at %d W; "
                    "power/status=no_permission. Grant SYS_ADMIN or run Zeus's daemon (zeusd) to tune.",
                    err,
                    self.original_limit_W,
                )
            else:
                log.warning(
                    "Power-limit tuning stopped: %s; training goes on at %d W, power/status=error.",
                    hint or f"the GPU refused a power-limit change ({err})",
                    self.original_limit_W,
                )

    def _cancel_window(self) -> None:
        plo = self._plo
        if plo is None:
            return
        from zeus.optimizer.power_limit import Profiling

        if isinstance(plo.state, Profiling):
            key = f"__GlobalPowerLimitOptimizer_{plo.state.current_power_limit // 1000}"
            try:
                self._zeus_monitor.end_window(key, cancel=True)
            except ValueError:
                pass

    # ---- restoring ----------------------------------------------------------------------------
    def _restore(self, why: str) -> None:
        """Put the original limit (not merely the maximum) and persistence mode back; once."""
        self._stopped = True
        if not self._touched or self.restored is not None or self._gpus is None or self._original_mW is None:
            return
        self.restored = False
        i = self._gpu_index
        try:
            if int(self._gpus.get_power_management_limit(i)) != self._original_mW:
                self._gpus.set_power_management_limit(i, self._original_mW)
                log.info("Power limit restored to %d W (%s).", self.original_limit_W, why)
            if (
                self._original_persistence is not None
                and bool(self._gpus.get_persistence_mode(i)) != self._original_persistence
            ):
                self._gpus.set_persistence_mode(i, self._original_persistence)
            self.restored = True
        except Exception as err:  # noqa: BLE001 - nothing more can be done; say so loudly
            log.warning(
                "Could not restore GPU %s's power limit to %d W (%s): %s", i, self.original_limit_W, why, err
            )

    def _finish_fit(self, why: str) -> None:
        self._cancel_window()
        if self._profiling and self._plo is not None:
            self.status = STATUS_INCOMPLETE
        self._profiling = False
        self._active = False
        self._restore(why)
        self._remove_guards()

    def _install_guards(self) -> None:
        """Restore on SIGTERM (chaining the handler found) and at interpreter exit."""
        if self._guards:
            return
        self._guards = True
        atexit.register(self._atexit_hook)
        if threading.current_thread() is not threading.main_thread():
            return
        prev = signal.getsignal(signal.SIGTERM)
        if prev is None:  # installed outside Python: it cannot be chained, so leave it alone
            return
        self._prev_sigterm = prev
        signal.signal(signal.SIGTERM, self._sigterm_handler)

    def _remove_guards(self) -> None:
        if not self._guards:
            return
        self._guards = False
        atexit.unregister(self._atexit_hook)
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._sigterm_handler:
                signal.signal(signal.SIGTERM, self._prev_sigterm)
        self._prev_sigterm = None

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._stopped = True
        self._profiling = False
        self._active = False
        self._restore("SIGTERM")
        prev = self._prev_sigterm
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_DFL:  # what would have happened without us: terminate
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _on_exit(self) -> None:
        self._restore("exit")

    # ---- results ----------------------------------------------------------------------------
    def _selector_text(self) -> str:
        if self.selector == "zeus_cost":
            return f"zeus_cost(eta={self.eta})"
        if self.selector == "max_slowdown":
            return f"max_slowdown({self.max_slowdown})"
        return self.selector

    def summary_figures(self) -> dict[str, Any]:
        """`power/*` figures for summary.json: status, limits, the profile, the dry-run plan."""
        out: dict[str, Any] = {"power/status": self.status}
        if self.original_limit_W is None:
            return out
        trained_at = self.chosen_limit_W if self.chosen_limit_W is not None else self.original_limit_W
        out["power/limit_W"] = trained_at
        out["power/original_limit_W"] = self.original_limit_W
        out["power/selector"] = self._selector_text()
        if self.restored is not None:
            out["power/restored"] = self.restored
        if self.profile:
            out["power/profile"] = self.profile
        if self.limit_log:
            out["power/limit_log"] = [list(x) for x in self.limit_log]
        if self.profile_file is not None:
            out["power/profile_file"] = str(self.profile_file)
        if self.reprofiles:
            out["power/reprofiles"] = self.reprofiles
        if self.plan is not None:
            out["power/dry_run"] = self.plan
        return out


__all__: Sequence[str] = ["PowerLimitTuner", "fit_counts", "make_selector", "net_signature"]
