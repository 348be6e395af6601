"""Compose the real conf/ in Python exactly as `python train.py <overrides>` would see it.

For tests and benchmarks that call `wattwise.train.train(cfg)` in-process: the config is
composed with Hydra's own node, HydraConfig is set (so `${hydra:...}` interpolations and
the W&B logger's group/name work as in a run), and the task config comes back without
the `hydra` node, as a real run's does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from wattwise.config_dir import CONF_DIR


def compose_run_config(
    overrides: Sequence[str], run_dir: str | Path, root: str | Path | None = None
) -> DictConfig:
    """The composed config of a run writing into `run_dir`; `root` replaces paths.root_dir and data_dir."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from wattwise.methods.registry import register_recipes
    from wattwise.utils.run_dirs import register_run_dir_resolvers

    register_recipes()
    register_run_dir_resolvers()
    run_dir = Path(run_dir)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"hydra.run.dir={run_dir}"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(Path.cwd() if root is None else root)
        cfg.hydra.job.override_dirname = ",".join(overrides) or "defaults"
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # a real run's task config has no hydra node either
        cfg.paths.output_dir = str(run_dir)
        if root is not None:
            cfg.paths.root_dir = str(root)
            cfg.paths.data_dir = str(Path(root) / "data")
    return cfg
