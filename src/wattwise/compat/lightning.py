"""Lightning's private names wattwise uses (checked against lightning 2.6.6; pinned <2.7).

- the fit loop's combined loader: dropped so a loader built before fit start is rebuilt at a new
  batch size (the batch-size finder);
- DDP's model set-up and hook registration: a pruned module is wrapped anew (pruning under DDP);
- the checkpoint connector's hpc paths and the accelerator connector's cluster environment: the
  SLURM requeue checkpoint (preemption, resume);
- the checkpoint connector's `resume_start` and `_loaded_checkpoint`: the checkpoint a `fit`/`test`
  has just read, before the module's weights load from it (prune resizes a pruned net there);
- `ModelCheckpoint._save_checkpoint` and the step and path it records: `last.ckpt` is a link to the
  best checkpoint when both are written at the same moment (utils/checkpoint_io.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CHECKED_WITH = "lightning==2.6.6"
PRIVATE_NAMES = (
    "lightning.pytorch.loops.fit_loop._FitLoop._combined_loader",  # an instance attribute: see test
    "lightning.pytorch.strategies.ddp.DDPStrategy._setup_model",
    "lightning.pytorch.strategies.ddp.DDPStrategy._register_ddp_hooks",
    "lightning.pytorch.trainer.connectors.checkpoint_connector._CheckpointConnector.hpc_save_path",
    "lightning.pytorch.trainer.connectors.checkpoint_connector._CheckpointConnector._hpc_resume_path",
    "lightning.pytorch.trainer.connectors.checkpoint_connector._CheckpointConnector.resume_start",
    "lightning.pytorch.trainer.connectors.checkpoint_connector._CheckpointConnector._loaded_checkpoint",
    "lightning.pytorch.trainer.trainer.Trainer._accelerator_connector",  # instance attribute
    "lightning.pytorch.trainer.trainer.Trainer._checkpoint_connector",  # instance attribute
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint._save_checkpoint",  # overridden
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint._last_global_step_saved",  # instance
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint._last_checkpoint_saved",  # instance
)
INSTANCE_ATTRIBUTES = {
    "_combined_loader",
    "_accelerator_connector",
    "_checkpoint_connector",
    "_loaded_checkpoint",
    "_last_global_step_saved",
    "_last_checkpoint_saved",
}
_READ_HOOKS = "_wattwise_after_checkpoint_read"


def forget_train_loader(trainer: Any) -> None:
    """Make the fit loop rebuild its train loader (one built early is at the old batch size)."""
    fit_loop = getattr(trainer, "fit_loop", None)
    if fit_loop is not None and getattr(fit_loop, "_combined_loader", None) is not None:
        fit_loop._combined_loader = None


def rewrap_ddp(strategy: Any) -> bool:
    """Wrap the strategy's module anew in DDP (its hooks were on the old parameters); False if not DDP."""
    if not hasattr(strategy, "_setup_model"):
        return False
    strategy.model = strategy._setup_model(strategy.lightning_module)
    if hasattr(strategy, "_register_ddp_hooks"):
        strategy._register_ddp_hooks()
    return True


def write_checkpoint(callback: Any, trainer: Any, filepath: str) -> None:
    """Lightning's own checkpoint write of a `ModelCheckpoint` (serialise, record, notify loggers)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    ModelCheckpoint._save_checkpoint(callback, trainer, filepath)


def record_checkpoint_written(callback: Any, step: int, filepath: str) -> None:
    """What Lightning's write records: the step (a second save at it is skipped) and the path."""
    callback._last_global_step_saved = step
    callback._last_checkpoint_saved = filepath


def cluster_environment(trainer: Any) -> Any:
    return trainer._accelerator_connector.cluster_environment


def hpc_save_path(trainer: Any) -> str:
    """Where Lightning writes the SLURM requeue checkpoint."""
    return trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)


def hpc_resume_path(trainer: Any) -> str | None:
    """The hpc checkpoint Lightning itself will resume from, if any."""
    return trainer._checkpoint_connector._hpc_resume_path


def after_checkpoint_read(trainer: Any, key: str, hook: Callable[[dict[str, Any]], None] | None) -> None:
    """Call `hook(checkpoint)` each time `trainer` has read a checkpoint to restore from (`fit`,
    `validate`, `test`, `predict` with a `ckpt_path`, a SLURM requeue), before anything in it is
    restored: the module's `on_load_checkpoint` and weights come after. `hook=None` removes `key`'s.

    Lightning calls callbacks' `setup` before it reads the checkpoint, but picks the path itself
    ("best", "last", "hpc") and keeps it private until then; this is the first moment it is known.
    """
    connector = trainer._checkpoint_connector
    hooks: dict[str, Callable[[dict[str, Any]], None]] = connector.__dict__.setdefault(_READ_HOOKS, {})
    if hook is None:
        hooks.pop(key, None)
        return
    hooks[key] = hook
    if "resume_start" in connector.__dict__:  # wrapped already (by an earlier call)
        return
    original = connector.resume_start

    def resume_start(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        checkpoint = connector._loaded_checkpoint
        if checkpoint:
            for each in list(hooks.values()):
                each(checkpoint)

    connector.resume_start = resume_start
