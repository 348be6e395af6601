"""A one-time, untimed warm-up fit, so a process's first run does not pay what later runs get free.

A Hydra multirun with the basic launcher runs every job in one process. The first job's energy
window would then hold what the process pays once: lazy imports inside Lightning's fit and torch's
checkpoint code, the allocator's first growth, the first calls of every kernel (and, on a GPU,
kernel loading and cuDNN/cuBLAS set-up). The data set's generation and caching, the imports of
train.py and the build of the datamodule already happen before the energy monitor starts (it
opens its window in `on_fit_start`, after the datamodule's `setup`).

`warm_up(cfg)` runs, before the run seeds its RNGs, a fit of 2 training batches, 1 validation and
1 test batch of a fresh datamodule and net built from the run's `data` and `model` on the
trainer's accelerator and precision, with no loggers, callbacks or methods, and saves its weights
to memory. Once per process and (data, model, accelerator, precision): the sweep's later jobs
skip it. Methods' own first calls (amp's bf16 kernels, say) are theirs: they land in the first
run of that method, in the first seed's round.

`warmup: auto` (train.yaml) warms up in multiruns only; `true` always; `false` never. A run on
several devices or nodes (DDP) is not warmed up: that would need its process group.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

_warmed: set[str] = set()
QUIET = ("lightning.pytorch", "lightning.fabric", "lightning")


def single_device(cfg: DictConfig) -> bool:
    """One device, one process: a warm-up of a distributed run would have to start its process group."""
    trainer = cfg.get("trainer") or {}
    strategy = str(trainer.get("strategy", "auto") or "auto")
    return (
        str(trainer.get("devices", 1)) == "1"
        and int(trainer.get("num_nodes", 1) or 1) == 1
        and strategy == "auto"
    )


def wanted(cfg: DictConfig) -> bool:
    setting = cfg.get("warmup", "auto")
    if not setting or not single_device(cfg):
        return False
    if setting == "auto":
        from wattwise.sweep import in_multirun

        return in_multirun()
    return bool(setting)


def _key(cfg: DictConfig) -> str:
    trainer = cfg.get("trainer") or {}
    parts = {
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "accelerator": str(trainer.get("accelerator", "auto")),
        "precision": str(trainer.get("precision", "32-true")),
    }
    return json.dumps(parts, sort_keys=True, default=str)


def warm_up(cfg: DictConfig) -> bool:
    """The warm-up fit, unless this process already ran it for this data, model and trainer; True if run."""
    key = _key(cfg)
    if key in _warmed:
        return False
    _warmed.add(key)  # once, even if it fails: the run itself then reports the problem
    levels = {name: logging.getLogger(name).level for name in QUIET}
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        _fit_briefly(cfg)
    except Exception as err:  # noqa: BLE001 - the warm-up must never stop or change the run
        log.warning("warm-up fit failed (the run goes on without it): %s: %s", type(err).__name__, err)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    return True


def _fit_briefly(cfg: DictConfig) -> None:
    import lightning as L
    import torch

    from wattwise.utils.instantiate import build_datamodule, build_module

    trainer_cfg: Any = cfg.get("trainer") or {}
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg.model, datamodule)
    with tempfile.TemporaryDirectory(prefix="wattwise-warmup-") as tmp:
        trainer = L.Trainer(
            accelerator=trainer_cfg.get("accelerator", "auto"),
            devices=1,
            precision=trainer_cfg.get("precision", "32-true"),
            max_epochs=1,
            limit_train_batches=2,
            limit_val_batches=1,
            limit_test_batches=1,
            num_sanity_val_steps=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp,
        )
        trainer.fit(module, datamodule=datamodule)
        trainer.test(module, datamodule=datamodule, verbose=False)
        torch.save(module.state_dict(), io.BytesIO())  # the checkpoint code's first call
