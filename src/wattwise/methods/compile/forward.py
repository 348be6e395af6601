"""The compiled forward, installed on the net in place so its state_dict keys never change.

`net.forward = CompiledForward(net, mode)` is an instance attribute over the class's forward:
the net's parameters, buffers and names are untouched, a checkpoint of a compiled run loads into
an eager net and back, and removing the attribute (`uninstall`) is the eager net again. Two other
ways were ruled out: `torch.compile(net)` returns an `OptimizedModule` whose keys gain `_orig_mod.`
when stored in place of the net, and `net.compile()` (torch 2.13) compiles `Module._call_impl`,
which dynamo skips, so a net built only of torch's own layers (`nn.Sequential`) ran eager.

Any exception from the compiler (dynamo, inductor, a missing C++ compiler) is caught on the call:
the step runs eager and `failure` says why, for the callback to step aside in one line.
"""

from __future__ import annotations

import types
import weakref
from typing import Any

import torch
from torch import nn

from wattwise.compat.torch import tree_flatten


def choose_mode(setting: str, device_type: str, static_shapes: bool) -> str:
    """torch.compile's mode: `auto` is CUDA graphs (reduce-overhead) on CUDA with static shapes."""
    if setting != "auto":
        return setting
    return "reduce-overhead" if device_type == "cuda" and static_shapes else "default"


def warm_steps(mode: str) -> int:
    """Compiled steps that carry the compile: CUDA graphs warm up, then record, then replay."""
    return 3 if mode == "reduce-overhead" else 1


def static_batches(loader: Any) -> bool:
    """Every training batch the same shape: the last batch dropped, or the data a whole number of them."""
    try:
        sampler = getattr(loader, "batch_sampler", None)
        if getattr(sampler, "drop_last", False):
            return True
        return len(loader.dataset) % int(loader.batch_size) == 0
    except (AttributeError, TypeError, ValueError):
        return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


class CompiledForward:
    """The net's forward through torch.compile, falling back to eager (and saying why) on any error."""

    def __init__(self, net: nn.Module, mode: str) -> None:
        self.owner = weakref.ref(net)
        self.mode = mode
        self.failure: str | None = None
        self.calls = 0
        self.compiled = torch.compile(type(net).forward, mode=mode)

    def _eager(self, *args: Any, **kwargs: Any) -> Any:
        net = self.owner()
        return type(net).forward(net, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        net = self.owner()
        if self.failure is not None or net is None:
            return self._eager(*args, **kwargs)
        try:
            out = self.compiled(net, *args, **kwargs)
            if self.calls == 0 and self.mode != "reduce-overhead":  # CUDA graphs: one backward per run
                _compile_backward(net, out)  # its errors surface here, not in Lightning's backward
            self.calls += 1
            return out
        except Exception as err:  # noqa: BLE001 - the compiler's own errors are many and private
            self.failure = _first_line(err)
            return self._eager(*args, **kwargs)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """A deep copy of the net (an export, an EMA) gets its own eager forward, not this one."""
        copy = memo.get(id(self.owner()))
        return types.MethodType(type(copy).forward, copy) if copy is not None else self


def _compile_backward(net: nn.Module, out: Any) -> None:
    """Run the compiled backward once (it compiles lazily) without touching any `.grad`."""
    if not torch.is_grad_enabled():
        return
    leaves = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
    params = [p for p in net.parameters() if p.requires_grad]
    if leaves and params:
        total = sum(t.float().sum() for t in leaves)
        torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)


def install(net: nn.Module, forward: CompiledForward) -> None:
    net.forward = forward


def uninstall(net: nn.Module) -> None:
    """The class's eager forward again (only ours is removed, never a user's own attribute)."""
    if isinstance(vars(net).get("forward"), CompiledForward):
        del net.forward


def installed(net: nn.Module) -> CompiledForward | None:
    found = vars(net).get("forward")
    return found if isinstance(found, CompiledForward) else None
