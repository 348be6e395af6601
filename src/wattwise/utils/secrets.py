"""API keys stay out of every file a run writes and every line it logs.

A key given on the command line (`energy.provider.api_key=...`, any `*api_key=`) would otherwise be
saved by Hydra (`.hydra/config.yaml`, `overrides.yaml`, `hydra.yaml`) before wattwise runs, then copied
into summary.json, the model card and the loggers' hyperparameters. So `hide_secret_overrides`
takes such overrides off the command line before Hydra reads it, carrying them in this process's
environment (as `ELECTRICITYMAPS_API_KEY` already does), and `restore_secret_overrides` puts them
back into the composed config after Hydra saved it. What does reach a record (a config composed by
a script, the hyperparameters) goes through `redact` / `redact_overrides` first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

REDACTED = "<redacted>"
_CARRIER = "WATTWISE_SECRET_OVERRIDES"  # key -> value, for this process and the sweep jobs it starts
_SECRET_NAMES = ("api_key", "apikey", "auth_token", "password", "secret")


def is_secret_key(key: str) -> bool:
    """Whether a config key holds a secret: its last part names an API key, token, password or secret."""
    last = str(key).lstrip("+~").split(".")[-1].lower()
    return any(last == n or last.endswith("_" + n) for n in _SECRET_NAMES)


def _split(override: str) -> tuple[str, str | None]:
    key, sep, value = override.partition("=")
    return key.lstrip("+~"), (value if sep else None)


def redact_overrides(overrides: Sequence[str]) -> list[str]:
    """The command-line overrides with each secret's value replaced by `<redacted>`."""
    out = []
    for o in overrides:
        key, value = _split(str(o))
        out.append(f"{str(o).partition('=')[0]}={REDACTED}" if value and is_secret_key(key) else str(o))
    return out


def redact(data: Any) -> Any:
    """A plain copy of a container with every secret-named, non-empty value replaced by `<redacted>`."""
    if isinstance(data, DictConfig) or OmegaConf.is_list(data):
        data = OmegaConf.to_container(data, resolve=False)
    if isinstance(data, Mapping):
        return {k: REDACTED if v and is_secret_key(str(k)) else redact(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact(v) for v in data]
    return data


def hide_secret_overrides(args: Sequence[str]) -> list[str]:
    """The command line without secret overrides; they are kept in this process's environment."""
    kept, hidden = [], {}
    for a in args:
        key, value = _split(a)
        if not a.startswith("-") and value is not None and is_secret_key(key):
            hidden[key] = value
        else:
            kept.append(a)
    if hidden:
        carried = json.loads(os.environ.get(_CARRIER, "{}") or "{}")
        os.environ[_CARRIER] = json.dumps({**carried, **hidden})
    return kept


def restore_secret_overrides(cfg: DictConfig) -> None:
    """Put the hidden secrets back into the composed config (after Hydra saved its copy)."""
    try:
        hidden = json.loads(os.environ.get(_CARRIER, "{}") or "{}")
    except ValueError:
        return
    if not isinstance(hidden, dict):
        return
    with open_dict(cfg):
        for key, value in hidden.items():
            OmegaConf.update(cfg, str(key), value, force_add=True)


def scrub_saved_config(hydra_dir: str | os.PathLike[str] | None) -> bool:
    """Redact a key that came from a config file (not the command line) in Hydra's saved copy,
    `<run dir>/.hydra/config.yaml`; True when something was redacted."""
    from pathlib import Path

    if hydra_dir is None or not (Path(hydra_dir) / "config.yaml").is_file():
        return False
    path = Path(hydra_dir) / "config.yaml"
    saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    clean = redact(saved)
    if clean == saved:
        return False
    OmegaConf.save(OmegaConf.create(clean), path)
    return True
