"""Checks a checkpoint before a run resumes from it, so a wrong file fails in one line, not mid-load.

A resume needs a file that loads (not truncated by a full disk or a half-finished copy), a net of
the same architecture (same tensor names and shapes; a net pruned during training, `+optim=prune`,
records its shapes and is resized to them, so those may differ), the same data shape and the same
energy methods (each restores its own state from the checkpoint: a prune schedule, an early-stopping
budget). Each message says what differs and how to resume correctly: with the overrides of the run
that saved the checkpoint, read from its run dir's `.hydra/overrides.yaml`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from wattwise.compat import lightning as compat_lightning
from wattwise.methods.shared.structure import STRUCTURE_KEY
from wattwise.utils.errors import ConfigError
from wattwise.utils.preemption import RUN_IDENTITY_KEY
from wattwise.utils.safe_load import load_checkpoint as load_checkpoint_file

log = logging.getLogger(__name__)

_METHOD_STATE_PREFIX = "wattwise."


def resume_path(cfg: DictConfig, trainer: Any) -> str | None:
    """The checkpoint `trainer.fit` will load: `ckpt_path`, else (under SLURM) the newest hpc checkpoint."""
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        hpc = compat_lightning.hpc_resume_path(trainer)  # what Lightning itself will pick
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if hpc is None and restarts > 0 and trainer.is_global_zero:
            log.warning(
                "This SLURM job was requeued (restart %d) but its run dir %s holds no hpc checkpoint: it "
                "starts over. Give the job a run dir that survives the requeue, e.g. "
                "hydra.run.dir=outputs/runs/slurm-$SLURM_JOB_ID (README: Preemption and requeue)",
                restarts,
                trainer.default_root_dir,
            )
        return hpc
    return None


def check_resume(
    cfg: DictConfig, trainer: Any, module: torch.nn.Module, datamodule: Any, methods: Iterable[Any]
) -> None:
    """Raise ConfigError when the checkpoint this run will resume from cannot work (module doc)."""
    path = resume_path(cfg, trainer)
    if path is None:
        return
    checkpoint = load_checkpoint(path)
    hint = how_to_resume(path)
    _check_net(path, checkpoint, module, hint)
    _check_data(path, checkpoint, datamodule, hint)
    _check_methods(path, checkpoint, [m.name for m in methods], hint)


def load_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint's contents; ConfigError when it is unreadable, truncated or not a checkpoint."""
    p = Path(path)
    if not os.access(p, os.R_OK):
        raise ConfigError(f"ckpt_path={path} is not readable (permission denied). Fix its permissions.")
    try:
        checkpoint = load_checkpoint_file(p, "ckpt_path", mmap=True)
    except ConfigError:
        raise  # weights_only refused it: the one line naming trust_checkpoint
    except Exception as err:
        others = sorted(str(q) for q in p.parent.glob("*.ckpt") if q != p)
        alternative = f" Resume from an intact one, e.g. ckpt_path={others[-1]}" if others else ""
        reason = (str(err).splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise ConfigError(
            f"ckpt_path={path} cannot be loaded: the file is truncated or damaged ({reason}).{alternative}"
        ) from None
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt_path={path} is not a Lightning checkpoint (it has no state_dict).")
    return dict(checkpoint)


def how_to_resume(path: str) -> str:
    """`python train.py <the saving run's overrides> ckpt_path=<path>`, when its run dir has them."""
    for run_dir in Path(path).resolve().parents[:2]:
        overrides_file = run_dir / ".hydra" / "overrides.yaml"
        if overrides_file.is_file():
            kept = [
                str(o)
                for o in OmegaConf.load(overrides_file)
                if not str(o).lstrip("+~").startswith(("ckpt_path=", "hydra."))
            ]
            return (
                f"Resume with the config that saved it ({run_dir / '.hydra' / 'config.yaml'}): "
                f"python train.py {' '.join([*kept, f'ckpt_path={path}'])}"
            )
    return "Resume with the same data, model and optim options as the run that saved it."


def _check_net(path: str, checkpoint: Mapping[str, Any], module: torch.nn.Module, hint: str) -> None:
    saved: Mapping[str, Any] = checkpoint["state_dict"]
    here = module.state_dict()
    what = _which_nets(checkpoint, module)
    missing = sorted(set(here) - set(saved))
    unexpected = sorted(set(saved) - set(here))
    if missing or unexpected:
        names = ", ".join((missing or unexpected)[:3])
        side = "this run's net has" if missing else "the checkpoint has"
        raise ConfigError(
            f"ckpt_path={path} is from another model{what}: {side} {len(missing or unexpected)} tensor(s) "
            f"the other lacks ({names}). {hint}"
        )
    resized = checkpoint.get(STRUCTURE_KEY) or {}  # a pruned net: restored to these shapes on load
    for name, tensor in saved.items():
        if name in resized or not hasattr(tensor, "shape"):
            continue
        if tuple(tensor.shape) != tuple(here[name].shape):
            raise ConfigError(
                f"ckpt_path={path} is from another model{what}: {name} is {list(tensor.shape)} there, "
                f"{list(here[name].shape)} here. {hint}"
            )


def _which_nets(checkpoint: Mapping[str, Any], module: torch.nn.Module) -> str:
    """` (saved by MLP, this run builds CNN)` when the checkpoint names another net class."""
    saved = ((checkpoint.get(RUN_IDENTITY_KEY) or {}).get("net") or "").rsplit(".", 1)[-1]
    net = getattr(module, "net", None)
    here = type(net).__name__ if net is not None else ""
    return f" (saved by {saved}, this run builds {here})" if saved and here and saved != here else ""


def _check_data(path: str, checkpoint: Mapping[str, Any], datamodule: Any, hint: str) -> None:
    identity = checkpoint.get(RUN_IDENTITY_KEY) or {}
    for key in ("input_shape", "num_classes"):
        saved, here = identity.get(key), getattr(datamodule, key, None)
        if saved is None or here is None:
            continue
        here = list(here) if key == "input_shape" else here
        if saved != here:
            raise ConfigError(
                f"ckpt_path={path} was trained on other data: {key} {saved} there, {here} here. {hint}"
            )


def _check_methods(path: str, checkpoint: Mapping[str, Any], names: list[str], hint: str) -> None:
    """The same energy methods. Lightning stores only non-empty callback states, so the method list
    comes from the run's record; without one, a method state this run cannot restore is the test."""
    states = checkpoint.get("callbacks") or {}
    with_state = sorted(k[len(_METHOD_STATE_PREFIX) :] for k in states if k.startswith(_METHOD_STATE_PREFIX))
    recorded = (checkpoint.get(RUN_IDENTITY_KEY) or {}).get("methods")
    saved, here = sorted(recorded if recorded is not None else with_state), sorted(names)
    differs = saved != here if recorded is not None else not set(saved) <= set(here)
    if differs:
        shown = lambda xs: "+".join(xs) or "none"  # noqa: E731
        raise ConfigError(
            f"ckpt_path={path} was trained with optim methods {shown(saved)}, this run has {shown(here)}: "
            f"each method resumes its own state from the checkpoint. {hint}"
        )
