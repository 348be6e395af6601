"""Stopping for the cluster: `last.ckpt` at every epoch and at the moment a run is interrupted.

Lightning already does the signal work: on SIGTERM (what `scancel` and preemption send) its
signal connector sets `trainer.received_sigterm` and the loops stop at the next batch with
`SIGTERMException`; under SLURM (`SLURMEnvironment`, detected when the job runs through `srun`)
it also handles the requeue signal (SIGUSR1, from `#SBATCH --signal=USR1@90`) by saving an hpc
checkpoint in the run dir and calling `scontrol requeue $SLURM_JOB_ID`, and a requeued job
(`ckpt_path` unset) resumes from the newest hpc checkpoint it finds there.

What this module adds:
- `LastCheckpoint`, a second, unmonitored `ModelCheckpoint` writing `last.ckpt` at the end of
  every epoch whatever `val/acc` did (the monitored one saves only on improvement, and Lightning
  copies `last.ckpt` only when it saves; on an epoch that improved, `last.ckpt` is a hard link to
  the new best checkpoint, the same state, instead of a second serialisation), and again when
  the fit is interrupted (SIGTERM, a submitit preemption, Ctrl+C), so a resume loses nothing;
  under SLURM it saves that moment as a new hpc checkpoint too, so a job that SLURM requeues
  resumes from it. Crashes are not interruptions: their state may be what crashed, and the last
  completed epoch stays.
- `interruption_exit_code`: the conventional 128+signal exit status (143 for SIGTERM), where
  Lightning's `SIGTERMException` would exit 0 and a killed job would pass for a success.
"""

from __future__ import annotations

import logging
import signal
from typing import Any
from weakref import proxy

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from wattwise.compat import lightning as compat_lightning
from wattwise.utils.atomic_write import link_atomically
from wattwise.utils.checkpoint_io import LeanModelCheckpoint

log = logging.getLogger(__name__)

# What stops a fit from outside: Lightning's SIGTERMException (a SystemExit), submitit's exit on
# its preemption signal (SystemExit), Ctrl+C (KeyboardInterrupt).
INTERRUPTIONS = (SystemExit, KeyboardInterrupt)
RUN_IDENTITY_KEY = "wattwise.run"  # what the run was trained on, for resume checks (utils/resume.py)


class LastCheckpoint(LeanModelCheckpoint):
    """`<dirpath>/last.ckpt` after every epoch and at an interruption (see the module docstring)."""

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,
            save_top_k=1,
            save_last=False,
            enable_version_counter=False,
            auto_insert_metric_name=False,
            save_on_exception=True,
        )

    def write(self, trainer: L.Trainer, filepath: str) -> None:
        """A second name of the best checkpoint written at this same moment, else a full write."""
        twin = self.twin_written_now(trainer)
        if twin is None:
            super().write(trainer, filepath)
            return
        if trainer.is_global_zero:
            link_atomically(twin, filepath, "checkpoint")
        trainer.strategy.barrier("LastCheckpoint.write")
        compat_lightning.record_checkpoint_written(self, trainer.global_step, filepath)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, INTERRUPTIONS) or trainer.state.fn != TrainerFn.FITTING:
            return
        super().on_exception(trainer, pl_module, exception)  # skips when this step is already saved
        environment = compat_lightning.cluster_environment(trainer)
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            path = compat_lightning.hpc_save_path(trainer)
            trainer.save_checkpoint(path)
            if trainer.is_global_zero:
                log.info("Interrupted: saved %s for the requeued job to resume from", path)
        elif trainer.is_global_zero:
            log.info(
                "Interrupted: saved %s (resume with ckpt_path=%s)", self.best_model_path, self.best_model_path
            )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """Every checkpoint of the run (best, last, hpc) records what it was trained on."""
        from wattwise.methods.base import energy_methods

        datamodule = trainer.datamodule
        shape = getattr(datamodule, "input_shape", None)
        checkpoint[RUN_IDENTITY_KEY] = {
            "methods": sorted(m.name for m in energy_methods(trainer)),  # also those with no state
            "module": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
            "net": _net_name(pl_module),
            "input_shape": list(shape) if shape is not None else None,
            "num_classes": getattr(datamodule, "num_classes", None),
        }


def _net_name(pl_module: Any) -> str | None:
    net = getattr(pl_module, "net", None)
    return f"{type(net).__module__}.{type(net).__qualname__}" if net is not None else None


def interruption_exit_code(err: BaseException) -> int | None:
    """128+signal for an interruption by signal (143 for SIGTERM), None for anything else."""
    if isinstance(err, SIGTERMException):
        return 128 + int(signal.SIGTERM)
    return None
