"""The teacher: built from an earlier wattwise run, a `.ckpt`, or a `_target_` node, then checked.

A run dir is read the way it was written: its `.hydra/config.yaml` rebuilds `model.net` (the
datamodule's `input_shape`/`num_classes` filled in as for any net), the best checkpoint (the one
its `ModelCheckpoint` tracked, else `last.ckpt`) gives the weights (a pruned net is resized to the
saved shapes first), and its `summary.json` says what training it cost. The teacher is a plain
`nn.Module` held by the callback, in eval mode with no gradients, never a submodule of the student.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from wattwise.utils.errors import ConfigError
from wattwise.utils.safe_load import load_checkpoint

KEY = "callbacks.distill.teacher"


@dataclass
class Teacher:
    """A built teacher and where it came from."""

    net: nn.Module
    described: str  # one line: the run, the checkpoint or the class
    weights_sha256: str
    home: Path | None  # the teacher's run dir (or the .ckpt's folder): where its cache lives
    summary: dict[str, Any] | None  # its run's summary.json, where it exists


def weights_sha256(net: nn.Module) -> str:
    """A hash of every tensor in the net's state (names, dtypes, shapes, bytes): the cache's key."""
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---- locating a run's files -----------------------------------------------------------------------
def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a run's ModelCheckpoint tracked as best, else `last.ckpt`, else the newest."""
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if last.exists():
        try:
            state = load_checkpoint(last, KEY)
        except ConfigError:
            raise  # weights_only refused it: one line naming trust_checkpoint
        except Exception as err:  # noqa: BLE001 - truncated or not a checkpoint: the same one line
            raise ConfigError(f"{KEY}={run_dir}: cannot read {last} ({type(err).__name__})") from None
        callbacks = state.get("callbacks") if isinstance(state, Mapping) else None
        for name, cb_state in (callbacks if isinstance(callbacks, Mapping) else {}).items():
            best = cb_state.get("best_model_path") if "ModelCheckpoint" in str(name) else None
            best = best if isinstance(best, str) else None
            for candidate in (Path(best), ckpt_dir / Path(best).name) if best else ():
                if candidate.exists():
                    return candidate
        return last
    found = sorted(ckpt_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(f"{KEY}={run_dir}: the run has no checkpoints/*.ckpt to take weights from")
    return found[-1]


def _run_dir_of(ckpt: Path) -> Path | None:
    run = ckpt.resolve().parent.parent
    return run if (run / ".hydra" / "config.yaml").exists() else None


def _read_summary(run_dir: Path | None) -> dict[str, Any] | None:
    path = run_dir / "summary.json" if run_dir is not None else None
    if path is None or not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _net_node(run_dir: Path) -> DictConfig:
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    node = OmegaConf.select(cfg, "model.net")
    if node is None or "_target_" not in node:
        raise ConfigError(f"{KEY}={run_dir}: its .hydra/config.yaml has no model.net._target_")
    try:  # resolve while the node has its parents (interpolations into the run's config)
        return OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra run: keep it as written
        return OmegaConf.create(OmegaConf.to_container(node, resolve=False))


def _targets(node: Any) -> list[str]:
    """Every `_target_` in a config node, nested ones included."""
    if isinstance(node, Mapping | DictConfig):
        own = [str(node["_target_"])] if "_target_" in node else []
        return own + [t for k, v in node.items() if k != "_target_" for t in _targets(v)]
    if isinstance(node, list | tuple) or OmegaConf.is_list(node):
        return [t for v in node for t in _targets(v)]
    return []


def _check_run_targets(node: DictConfig, run_dir: Path) -> None:
    """A run dir's config is a file someone handed over, like its checkpoint: every `_target_` it
    would instantiate must be an nn.Module class (a net), not any callable, unless trusted."""
    from hydra.utils import get_class

    from wattwise.utils.safe_load import TRUST_KEY, trusted

    if trusted():
        return
    for target in _targets(node):
        try:
            ok = issubclass(get_class(target), nn.Module)
        except Exception:  # noqa: BLE001 - not importable, or not a class
            ok = False
        if not ok:
            raise ConfigError(
                f"{KEY}={run_dir}: its .hydra/config.yaml names {target} in model.net, which is not a "
                f"torch net class; refused. If the run dir comes from a source you trust, set "
                f"{TRUST_KEY}=true"
            )


# ---- building ---------------------------------------------------------------------------------------
def _build(node: Mapping[str, Any] | DictConfig, facts: Mapping[str, Any], key: str) -> nn.Module:
    """Instantiate a net node, filling `input_shape`/`num_classes` from the task as for the student."""
    from wattwise.utils.instantiate import _accepts, build_at, locate

    node = node if isinstance(node, DictConfig) else OmegaConf.create(dict(node))
    names, _ = _accepts(locate(key, node))
    extra = {}
    for k in ("input_shape", "num_classes"):
        if k in names and k not in node and facts.get(k) is not None:
            extra[k] = list(facts[k]) if k == "input_shape" else facts[k]
    net = build_at(key, node, **extra)
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"{key}._target_={node.get('_target_')} built a {type(net).__name__}, not an nn.Module"
        )
    return net


def _net_weights(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(the net's state dict, the structure record) from a wattwise .ckpt or a plain state dict."""
    if "state_dict" in state:  # a Lightning checkpoint of ClassifierModule: the net is `net.`
        weights = {k[4:]: v for k, v in state["state_dict"].items() if k.startswith("net.")}
        from wattwise.methods.shared.structure import STRUCTURE_KEY

        shapes = state.get(STRUCTURE_KEY) or {}
        return weights, {STRUCTURE_KEY: {k[4:]: v for k, v in shapes.items() if k.startswith("net.")}}
    return dict(state), {}


def _load_weights(net: nn.Module, path: Path, key: str) -> None:
    from wattwise.methods.shared.structure import restore_structure

    try:
        state = load_checkpoint(path, key)
    except ConfigError:
        raise  # weights_only refused it: one line naming trust_checkpoint
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same one-line error
        first = (str(err).splitlines() or [""])[0][:200]
        raise ConfigError(f"{key}: cannot read {path} ({type(err).__name__}: {first})") from None
    if not isinstance(state, Mapping):
        raise ConfigError(f"{key}: {path} holds a {type(state).__name__}, not a checkpoint or state dict")
    weights, structure = _net_weights(state)
    restore_structure(net, structure)  # a pruned teacher: resize to its saved shapes first
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).replace("\n", " ").replace("\t", " ")[:300]
        raise ConfigError(
            f"{key}: the weights in {path} do not fit the net rebuilt for this task "
            f"(trained for other classes or inputs?): {first}"
        ) from None


def load_teacher(spec: Any, weights: str | None, facts: Mapping[str, Any]) -> Teacher:
    """The teacher from `callbacks.distill.teacher` (+ `teacher_weights`), frozen, on the CPU."""
    if isinstance(spec, Mapping | DictConfig):
        net = _build(spec, facts, KEY)
        described = str(spec.get("_target_"))
        home = None
        if weights is not None:
            path = Path(str(weights)).expanduser()
            if not path.exists():
                raise ConfigError(f"callbacks.distill.teacher_weights={weights}: no such file")
            _load_weights(net, path, "callbacks.distill.teacher_weights")
            described += f" with weights {path}"
            home = path.resolve().parent
        else:
            described += " (its initial weights: no teacher_weights given)"
        summary = _read_summary(_run_dir_of(Path(str(weights)))) if weights else None
    else:
        path = Path(str(spec)).expanduser()
        if path.is_dir():
            run_dir, ckpt = path, best_checkpoint(path)
        elif path.suffix == ".ckpt" and path.exists():
            run_dir, ckpt = _run_dir_of(path), path
        else:
            raise ConfigError(f"{KEY}={spec}: no such wattwise run dir or .ckpt file")
        if run_dir is None:
            raise ConfigError(
                f"{KEY}={spec}: no .hydra/config.yaml two levels up to rebuild its net from; give "
                f"{KEY}={{_target_: <net class>}} and callbacks.distill.teacher_weights={spec}"
            )
        if not (run_dir / ".hydra" / "config.yaml").exists():
            raise ConfigError(f"{KEY}={spec}: not a wattwise run dir (no .hydra/config.yaml)")
        node = _net_node(run_dir)
        _check_run_targets(node, run_dir)
        net = _build(node, facts, KEY)
        _load_weights(net, ckpt, KEY)
        described, home, summary = f"{ckpt}", ckpt.resolve().parent, _read_summary(run_dir)
    net.eval()
    net.requires_grad_(False)
    return Teacher(net, described, weights_sha256(net), home, summary)


def check_outputs(teacher: nn.Module, example: torch.Tensor, num_classes: int | None) -> None:
    """The teacher takes this task's inputs and gives one logit per class, or one line saying not."""
    shape = tuple(example.shape[1:])
    try:
        with torch.no_grad():
            out = teacher(example)
    except Exception as err:  # noqa: BLE001 - a net that cannot take these inputs, whatever it raised
        msg = str(err).replace("\n", " ")[:200]
        raise ConfigError(
            f"{KEY}: the teacher cannot take this task's inputs (one sample {shape}, "
            f"{example.dtype}): {type(err).__name__}: {msg}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != example.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{KEY}: the teacher must return logits (batch, classes), got {got}")
    if num_classes is not None and out.shape[1] != num_classes:
        raise ConfigError(
            f"{KEY}: the teacher gives {out.shape[1]} logits per sample but the task has "
            f"{num_classes} classes: distil from a teacher trained on this task"
        )
