"""Writing the pruned net for inference: a whole-module file and a `torch.export` program.

The program takes any batch size (a dynamic batch dimension) and, for token models (integer
inputs of shape (N, T)), any sequence length up to the traced one where the net allows it; it
loads with torch alone: `torch.export.load("pruned_net.pt2").module()`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wattwise.methods.shared.structure import STRUCTURE_KEY, restore_structure
from wattwise.utils.atomic_write import save_atomically
from wattwise.utils.errors import ConfigError
from wattwise.utils.safe_load import load_checkpoint

log = logging.getLogger(__name__)

MAX_BATCH = 1 << 16


def _dynamic_shape_options(example: torch.Tensor) -> list[tuple[str, dict[int, Any]]]:
    """Dynamic-shape specs to try, most general first: (what is dynamic, spec for the input)."""
    Dim = torch.export.Dim
    batch = Dim("batch", min=1, max=MAX_BATCH)
    options: list[tuple[str, dict[int, Any]]] = []
    if not example.dtype.is_floating_point and example.dim() == 2 and example.shape[1] > 2:
        options.append(("batch,seq", {0: batch, 1: Dim("seq", min=2, max=int(example.shape[1]))}))
    options.append(("batch", {0: batch}))
    return options


def _export_program(model: nn.Module, example: torch.Tensor) -> tuple[Any, str]:
    errors = []
    for what, spec in _dynamic_shape_options(example):
        try:
            return torch.export.export(model, (example,), dynamic_shapes=(spec,)), what
        except Exception as err:  # noqa: BLE001 - the next, narrower spec is tried
            errors.append(f"{what}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    try:
        ep = torch.export.export(model, (example,))
    except Exception as err:  # noqa: BLE001
        errors.append(f"static: {type(err).__name__}: {err}")
        raise RuntimeError("; ".join(errors)) from err
    log.warning(
        "prune: pruned_net.pt2 takes only inputs of shape %s (no dynamic batch: %s)",
        tuple(example.shape),
        "; ".join(errors),
    )
    return ep, "none"


def export_net(net: nn.Module, example: torch.Tensor, out_dir: Path, program: bool = True) -> dict[str, str]:
    """Write `net` for inference: `pruned_net.pt` (whole module) and `pruned_net.pt2` (torch.export).

    Load with `torch.load("pruned_net.pt", weights_only=False)` (a whole module is a pickle: only a file
    you wrote yourself; needs the net's class importable) or
    `torch.export.load("pruned_net.pt2").module()` (needs only torch). Returns the paths written
    (`module`, `program`) and which input dimensions the program leaves free (`dynamic`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(net).cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    written = {}
    path = out_dir / "pruned_net.pt"
    save_atomically(model, path, "the pruned net")
    written["module"] = str(path)
    if program:
        x = example.detach().cpu()
        if x.shape[0] < 2:  # a batch of one would fix the batch size in the program
            x = torch.cat([x, x])
        try:
            with torch.no_grad():
                ep, dynamic = _export_program(model, x)
            path2 = out_dir / "pruned_net.pt2"
            torch.export.save(ep, path2)
            written["program"] = str(path2)
            written["dynamic"] = dynamic
        except Exception as err:  # noqa: BLE001 - the full-module file is still there
            log.warning("prune: torch.export of the pruned net failed (%s); pruned_net.pt is written", err)
    return written


def submodule_prefix(root: nn.Module, net: nn.Module) -> str | None:
    """`net`'s state-dict prefix inside `root` ("net." for ClassifierModule.net, "" for root itself)."""
    for name, mod in root.named_modules():
        if mod is net:
            return f"{name}." if name else ""
    return None


def net_from_checkpoint(net: nn.Module, checkpoint: dict[str, Any], prefix: str) -> nn.Module:
    """A copy of `net` holding the weights (and widths) a Lightning checkpoint saved for it."""
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    shapes = {
        k[len(prefix) :]: v for k, v in (checkpoint.get(STRUCTURE_KEY) or {}).items() if k.startswith(prefix)
    }
    out = copy.deepcopy(net)
    restore_structure(out, {STRUCTURE_KEY: shapes})
    out.load_state_dict(state)
    return out


def read_checkpoint(path: str | Path, key: str) -> dict[str, Any]:
    """A checkpoint the export reads (the best one), weights only: a ckpt_path or resume can point
    the checkpoint callback's `best_model_path` at any file, so it is loaded like a user's file."""
    checkpoint = load_checkpoint(path, key)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"{key}={path} is not a Lightning checkpoint (it has no state_dict)")
    return checkpoint
