"""Lightning's private names wattwise uses (checked against lightning 2.6.6; pinned <2.7).

- the fit loop's combined loader: dropped so a loader built before fit start is rebuilt at a new
  batch size (the batch-size finder);
- DDP's model set-up and hook registration: a pruned module is wrapped anew (pruning under DDP);
- the checkpoint connector's hpc paths and the accelerator connector's cluster environment: the
  SLURM requeue checkpoint (preemption, resume).
"""

from __future__ import annotations

from typing import Any

CHECKED_WITH = "lightning==2.6.6"
PRIVATE_NAMES = (
    "lightning.pytorch.loops.fit_loop._FitLoop._combined_loader",  # an instance attribute: see test
    "lightning.pytorch.strategies.ddp.DDPStrategy._setup_model",
    "lightning.pytorch.strategies.ddp.DDPStrategy._register_ddp_hooks",
    "lightning.pytorch.trainer.connectors.checkpoint_connector._CheckpointConnector.hpc_save_path",
    "lightning.pytorch.trainer.connectors.checkpoint_connector._CheckpointConnector._hpc_resume_path",
    "lightning.pytorch.trainer.trainer.Trainer._accelerator_connector",  # instance attribute
    "lightning.pytorch.trainer.trainer.Trainer._checkpoint_connector",  # instance attribute
)
INSTANCE_ATTRIBUTES = {"_combined_loader", "_accelerator_connector", "_checkpoint_connector"}


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


def cluster_environment(trainer: Any) -> Any:
    return trainer._accelerator_connector.cluster_environment


def hpc_save_path(trainer: Any) -> str:
    """Where Lightning writes the SLURM requeue checkpoint."""
    return trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)


def hpc_resume_path(trainer: Any) -> str | None:
    """The hpc checkpoint Lightning itself will resume from, if any."""
    return trainer._checkpoint_connector._hpc_resume_path
