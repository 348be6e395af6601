"""Checks a composed config before anything is built, so bad input fails in seconds, not mid-run.

Each message names the config key, what it got and what would work. Settings
owned by one component (a callback's thresholds, a net's widths) are checked by
that component's constructor instead; `wattwise.train` reports those the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from wattwise.utils.errors import ConfigError


def _positive_int(cfg: DictConfig, key: str, hint: str) -> None:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}. {hint}")


def _check_dir(key: str, path: str | None) -> None:
    """A data dir must be a readable folder, or creatable where it does not exist yet."""
    if not path:
        return
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"{key}={path} is not a directory. Point it at a folder, e.g. {key}=data")
        if not os.access(p, os.R_OK | os.X_OK):
            raise ConfigError(f"{key}={path} is not readable. Fix its permissions or choose another folder.")
        return
    parent = next((q for q in p.absolute().parents if q.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key}={path} does not exist and cannot be created under {parent}. Choose a writable folder."
        )


def _known_top_level_keys() -> set[str]:
    """The keys conf/train.yaml sets and the config groups its defaults list names."""
    from omegaconf import OmegaConf

    from wattwise.config_dir import CONF_DIR

    train_yaml = OmegaConf.load(Path(CONF_DIR) / "train.yaml")
    groups = set()
    for entry in train_yaml.get("defaults") or []:
        if isinstance(entry, str):
            continue
        groups.update(str(k).split("@")[0].removeprefix("override ").strip("/") for k in entry)
    return {str(k) for k in train_yaml if k != "defaults"} | groups | {"hydra"}


def _check_top_level_keys(cfg: DictConfig) -> None:
    """`+no_such_key=1` is a typo, not a setting: wattwise would ignore it silently."""
    unknown = sorted(set(map(str, cfg)) - _known_top_level_keys())
    if unknown:
        raise ConfigError(
            f"{unknown[0]} is not a wattwise setting (no top-level key of that name in conf/train.yaml). "
            f"Check its spelling, or remove +{unknown[0]}=..."
        )


def _boolean(cfg: DictConfig, key: str) -> None:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")


def _check_epochs_bounded(cfg: DictConfig) -> None:
    """`trainer.max_epochs=null` with nothing else bounding the fit is Lightning's 1000 epochs."""
    from omegaconf import OmegaConf

    trainer = OmegaConf.select(cfg, "trainer")
    if trainer is None or "max_epochs" not in trainer or trainer.get("max_epochs") is not None:
        return
    if trainer.get("max_steps", -1) in (None, -1) and trainer.get("max_time") is None:
        raise ConfigError(
            "trainer.max_epochs is null and neither trainer.max_steps nor trainer.max_time bounds the "
            "fit: Lightning would train 1000 epochs. Try trainer.max_epochs=10."
        )


def _check_metric_names(cfg: DictConfig, key: str) -> None:
    """A metric name setting: null, a non-empty string, or a list of them."""
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key)
    names = list(value) if OmegaConf.is_list(value) else [value] if value is not None else []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{key} must name a logged metric (e.g. {key}=test/acc), got {name!r}")


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first setting that cannot work."""
    from omegaconf import OmegaConf

    _check_top_level_keys(cfg)
    if OmegaConf.select(cfg, "data.batch_size", default=0) is None:
        raise ConfigError("data.batch_size must be a positive integer, got None. Try data.batch_size=64.")
    _positive_int(cfg, "data.batch_size", "Try data.batch_size=64.")
    _positive_int(cfg, "data.eval_batch_size", "Leave it null to use max(batch_size, 256).")
    _positive_int(cfg, "trainer.max_epochs", "Try trainer.max_epochs=10.")
    intensity = OmegaConf.select(cfg, "energy.grid_gCO2_per_kWh")
    if intensity is not None and (not isinstance(intensity, int | float) or intensity < 0):
        raise ConfigError(
            f"energy.grid_gCO2_per_kWh must be a number >= 0 (grams CO2e per kWh), got {intensity!r}. "
            "The world average is about 475."
        )
    from wattwise.energy.carbon import check_carbon_settings

    check_carbon_settings(cfg)  # energy.region in the tables, energy.pue >= 1, energy.provider's keys
    mode = OmegaConf.select(cfg, "energy.mode")
    if mode is not None and mode not in ("auto", "estimate", "off"):
        raise ConfigError(
            f"energy.mode must be auto, estimate or off, got {mode!r}. Or choose energy=auto|estimate|off."
        )
    _check_dir("paths.data_dir", OmegaConf.select(cfg, "paths.data_dir"))
    _check_dir("data.data_dir", OmegaConf.select(cfg, "data.data_dir"))
    ckpt = OmegaConf.select(cfg, "ckpt_path")
    if ckpt is not None and not Path(ckpt).is_file():
        raise ConfigError(
            f"ckpt_path={ckpt} is not a file. Pass a checkpoint, e.g. <run dir>/checkpoints/last.ckpt"
        )
    _boolean(cfg, "trust_checkpoint")
    _boolean(cfg, "test")
    seed = OmegaConf.select(cfg, "seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise ConfigError(f"seed must be an integer from 0 to {2**32 - 1} (numpy's range), got {seed!r}")
    _check_epochs_bounded(cfg)
    _check_metric_names(cfg, "optimized_metric")
