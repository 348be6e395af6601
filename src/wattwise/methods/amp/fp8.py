"""FP8 training for the layers that gain from it, on the cards that have it (torchao.float8).

The gate has two halves, both plain functions of what they are told (so tests describe the
hardware and the net instead of reading the host):

- `fp8_support(device_type, capability)`: FP8 tensor cores exist on CUDA compute capability
  8.9 (Ada) and 9.0+ (Hopper, Blackwell); nowhere else, and never on a CPU.
- `plan_fp8_layers(net, recipe)`: which `nn.Linear` layers go to FP8. torchao's own filter for
  the recipe decides (`_auto_filter_for_recipe`: both dimensions multiples of 16, and large
  enough that the FP8 matmul beats bf16 on H100 by torchao's benchmarks); every other layer
  keeps bf16, with the reason.

`gate` puts the two together with amp's settings. FP8 is never switched on blind: amp
(methods/amp/callback.py) measures it against bf16 at fit start and keeps it only if it is
cheaper. torchao recommends `torch.compile` for FP8 training; in eager mode its casts cost extra
kernels, which the measurement sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

FP8_MIN_CAPABILITY = (8, 9)  # Ada (8.9), Hopper (9.0) and newer have FP8 tensor cores
RECIPES = ("tensorwise", "rowwise")


@dataclass
class Fp8Plan:
    """Layers that train in FP8, and every other Linear layer with why it does not."""

    fp8: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        kept = "; ".join(f"{n}: {why}" for n, why in self.kept.items()) or "none"
        return f"FP8: {', '.join(self.fp8) or 'none'}; kept in bf16: {kept}"


def fp8_support(device_type: str, capability: tuple[int, int] | None) -> tuple[bool, str]:
    """(can this device train in FP8, why)."""
    if device_type != "cuda":
        return False, f"no FP8 on {device_type} (FP8 tensor cores are CUDA-only)"
    if capability is None or tuple(capability) < FP8_MIN_CAPABILITY:
        return False, f"compute capability {capability} has no FP8 tensor cores (needs >= 8.9)"
    return True, f"compute capability {tuple(capability)} has FP8 tensor cores"


def _torchao_filter(recipe: str) -> Any:
    from wattwise.compat.torchao import fp8_layer_filter

    return fp8_layer_filter(recipe)


def plan_fp8_layers(net: nn.Module, recipe: str = "tensorwise") -> Fp8Plan:
    """Which Linear layers of `net` gain from FP8 by torchao's shape guidance for `recipe`."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    gains = _torchao_filter(recipe)
    attention = [n for n, m in net.named_modules() if isinstance(m, nn.MultiheadAttention)]
    plan = Fp8Plan()
    for name, m in net.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        out_f, in_f = m.weight.shape
        if any(name.startswith(f"{a}.") for a in attention):
            plan.kept[name] = "attention projection (attention reads its weight directly)"
        elif in_f % 16 or out_f % 16:
            plan.kept[name] = f"{in_f}x{out_f}: dimensions not multiples of 16"
        elif not gains(m, name):
            plan.kept[name] = f"{in_f}x{out_f}: too small to gain by torchao's {recipe} benchmarks"
        else:
            plan.fp8.append(name)
    return plan


def swap_to_fp8(net: nn.Module, names: list[str], recipe: str = "tensorwise") -> dict[str, nn.Module]:
    """Swap the named Linear layers for torchao's Float8Linear (same Parameters), in place.

    Returns {name: the original Linear}, what `swap_back` needs to undo it."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    wanted = set(names)
    originals = {n: net.get_submodule(n) for n in names}
    convert_to_float8_training(
        net,
        module_filter_fn=lambda m, fqn: fqn in wanted,
        config=Float8LinearConfig.from_recipe_name(recipe),
    )
    return originals


def swap_back(net: nn.Module, originals: dict[str, nn.Module]) -> None:
    """Put the original Linear layers back (they share their Parameters with the FP8 ones)."""
    for name, linear in originals.items():
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, linear)


def gate(
    setting: str, precision: str, device: tuple[str, tuple[int, int] | None], net: nn.Module, recipe: str
) -> tuple[list[str], str, str | None]:
    """amp's FP8 gate: (layers to try in FP8, the note amp reports, the card's answer where it passed).

    In order: `callbacks.amp.fp8`, the run's precision (FP8 is tried against bf16-mixed), the card,
    torchao installed, then torchao's shape guidance per layer.
    """
    if setting == "off":
        return [], "off (callbacks.amp.fp8)", None
    if precision != "bf16-mixed":
        return [], f"not tried: the run trains in {precision}, FP8 is tried against bf16-mixed", None
    supported, why = fp8_support(*device)
    if not supported:
        return [], f"not tried: {why}", None
    from wattwise.compat.torchao import INSTALL_HINT
    from wattwise.compat.torchao import available as torchao_available

    if not torchao_available():
        return [], f"not tried: {INSTALL_HINT}", None
    plan = plan_fp8_layers(net, recipe)
    return list(plan.fp8), plan.describe(), why
