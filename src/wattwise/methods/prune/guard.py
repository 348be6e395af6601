"""Pruning that can be undone: a trial before, a check after, a rollback when the net broke.

torch-pruning cannot handle every net, and it does not always say so: it fails half-way through a
group on an LSTM (an `IndexError` with one layer, an assertion with two), and on layouts its
dependency graph gets wrong (patch tokens `flatten(1)`-ed into a head) it prunes without a word
and leaves a net that no longer runs. So:

- at fit start, a one-shot trial prune of a copy of the net must leave a net that runs and gives
  the same output shapes (`trial_prune`);
- before each scheduled prune, the net's output shapes on real samples are taken and the net and
  optimizers are captured by reference (`Snapshot`: torch-pruning replaces the tensors it shrinks
  and never writes into them, so holding the old ones costs no memory);
- after it, the pruned net must run on the same samples and give the same shapes (`check_pruned`);
  if not, or if torch-pruning raised, `Snapshot.restore` puts every module and optimizer back as it
  was (the same parameter objects, so DDP's hooks and the LR scheduler see nothing change).
"""

from __future__ import annotations

import copy
import dataclasses
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from wattwise.methods.prune import pruner as pruners
from wattwise.methods.prune.settings import PruneSettings
from wattwise.methods.prune.step import RanksDisagree
from wattwise.methods.shared.structure import modes, restore_modes

KEY = "callbacks.prune"
WAY_OUT = f"leave the offending layers out with {KEY}.ignored_layers"


def one_line(err: BaseException) -> str:
    """`Type: first line of the message`: what a step-aside reason quotes of an exception; for a
    bare `assert` (torch-pruning's own checks), the failing source line instead."""
    text = str(err).strip()
    if not text:
        frames = traceback.extract_tb(err.__traceback__)
        text = (frames[-1].line or "").strip() if frames else ""
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


# ---- output shapes ---------------------------------------------------------------------------------
def _shapes(out: Any) -> Any:
    if torch.is_tensor(out):
        return tuple(out.shape)
    if isinstance(out, dict):
        return {k: _shapes(v) for k, v in out.items()}
    if isinstance(out, list | tuple):
        return [_shapes(v) for v in out]
    return type(out).__name__


def output_shapes(net: nn.Module, example: torch.Tensor) -> Any:
    """The shapes of what `net` returns for `example` (eval mode, no grad; modes restored)."""
    saved = modes(net)
    try:
        net.eval()
        with torch.no_grad():
            return _shapes(net(example))
    finally:
        restore_modes(saved)


def output_width(net: nn.Module, example: torch.Tensor) -> int | None:
    """The K of a net returning one (N, K) tensor (a regression's outputs, a classifier's logits):
    the layers of that width are its head, left alone when nothing names the number of classes."""
    try:
        shapes = output_shapes(net, example)
    except Exception:  # noqa: BLE001 - the trial says why the net does not run
        return None
    return shapes[1] if isinstance(shapes, tuple) and len(shapes) == 2 else None


def check_pruned(net: nn.Module, example: torch.Tensor, expected: Any) -> str | None:
    """Why the pruned `net` is broken (it raises, or its output shapes changed); None if it is fine."""
    try:
        got = output_shapes(net, example)
    except Exception as err:  # noqa: BLE001 - any failure of the pruned net is the reason to roll back
        return f"the pruned {type(net).__name__} no longer runs ({one_line(err)})"
    if got != expected:
        return f"the pruned {type(net).__name__} returns shape {got} instead of {expected}"
    return None


# ---- the trial at fit start ------------------------------------------------------------------------
def trial_prune(
    net: nn.Module, example: torch.Tensor, settings: PruneSettings, ratio: float, num_classes: int | None
) -> str | None:
    """Prune a copy of `net` to `ratio` in one shot and check it; why it cannot be pruned, or None.

    Magnitude importance is used whatever the setting: the trial is about structure, and a copy
    has no gradients for Taylor.
    """
    try:
        expected = output_shapes(net, example)
    except Exception as err:  # noqa: BLE001 - the reason is reported in one line
        return f"{type(net).__name__} does not run on {len(example)} real samples ({one_line(err)})"
    try:
        trial = copy.deepcopy(net)
    except Exception:  # noqa: BLE001 - an uncopyable net: the check after each prune still guards it
        return None
    trial_settings = dataclasses.replace(settings, importance="magnitude")
    try:
        ignored = pruners.ignored_modules(trial, settings.ignored_layers, num_classes)
        pruners.one_shot(trial, example, trial_settings, ratio, ignored)
    except Exception as err:  # noqa: BLE001 - torch-pruning's failures become a step-aside reason
        return f"torch-pruning cannot prune {type(net).__name__} ({one_line(err)}); {WAY_OUT}"
    problem = check_pruned(trial, example, expected)
    if problem is not None:
        return f"{problem} after a trial prune to ratio {ratio:.2f}; {WAY_OUT}"
    return None


# ---- rollback ----------------------------------------------------------------------------------------
def _container_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return None


@dataclass
class Snapshot:
    """Every module's attributes and every optimizer's parameters and state, held by reference."""

    modules: list[tuple[nn.Module, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    grads: list[tuple[nn.Parameter, torch.Tensor | None]] = field(default_factory=list)
    optimizers: list[tuple[torch.optim.Optimizer, list[list[Any]], dict[Any, Any]]] = field(
        default_factory=list
    )

    @classmethod
    def capture(cls, net: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> Snapshot:
        """What a prune may change: module attributes (and the dicts and lists among them, e.g.
        `_parameters` or an LSTM's `_flat_weights`, which torch-pruning fills in place)."""
        snap = cls()
        for mod in net.modules():
            attrs = dict(mod.__dict__)
            contents = {k: c for k, v in attrs.items() if (c := _container_copy(v)) is not None}
            snap.modules.append((mod, attrs, contents))
        snap.grads = [(p, p.grad) for p in net.parameters()]
        for opt in optimizers:
            params = [list(pg["params"]) for pg in opt.param_groups]
            snap.optimizers.append((opt, params, dict(opt.state)))
        return snap

    def restore(self) -> None:
        """Put everything back as captured: the same objects, with their contents as they were."""
        for mod, attrs, contents in self.modules:
            for name in [k for k in mod.__dict__ if k not in attrs]:
                del mod.__dict__[name]
            for name, value in attrs.items():
                if isinstance(value, list):
                    value[:] = contents[name]
                elif name in contents:
                    value.clear()
                    value.update(contents[name])
                mod.__dict__[name] = value
        for p, grad in self.grads:
            p.grad = grad
        for opt, params, state in self.optimizers:
            for pg, kept in zip(opt.param_groups, params):
                pg["params"] = kept
            opt.state.clear()
            opt.state.update(state)


def prune_or_roll_back(
    net: nn.Module,
    example: torch.Tensor,
    optimizers: Sequence[torch.optim.Optimizer],
    prune: Callable[[], None],
) -> str | None:
    """Run `prune` on `net`; if torch-pruning raises or leaves a net that no longer runs on `example`
    as before, put `net` and `optimizers` back as they were and return why (None: it pruned)."""
    try:
        expected = output_shapes(net, example)
    except Exception as err:  # noqa: BLE001 - reported in one line
        return f"{type(net).__name__} does not run on {len(example)} real samples ({one_line(err)})"
    snapshot = Snapshot.capture(net, optimizers)
    try:
        prune()
        problem = check_pruned(net, example, expected)
    except RanksDisagree:
        raise
    except Exception as err:  # noqa: BLE001 - torch-pruning's failures become the reason
        problem = f"torch-pruning failed on {type(net).__name__} ({one_line(err)})"
    if problem is None:
        return None
    snapshot.restore()
    return problem
