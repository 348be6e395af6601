"""torchao, behind one door: whether it is installed, and its private FP8 layer filter.

Checked against torchao 0.18 (pinned <0.19). `_auto_filter_for_recipe` is torchao's own shape
guidance for which Linear layers gain from FP8; amp's FP8 plan asks it, layer by layer.
"""

from __future__ import annotations

from typing import Any

CHECKED_WITH = "torchao>=0.18,<0.19"
PRIVATE_NAMES = ("torchao.float8.float8_linear_utils._auto_filter_for_recipe",)
INSTANCE_ATTRIBUTES: set[str] = set()
INSTALL_HINT = "torchao is not installed: pip install -e '.[quant]' (make install does it)"


def available() -> bool:
    try:
        import torchao  # noqa: F401
    except ImportError:
        return False
    return True


def fp8_layer_filter(recipe: str) -> Any:
    """torchao's filter `(module, fqn) -> bool` for FP8 under `recipe` (tensorwise, rowwise)."""
    from torchao.float8.float8_linear_utils import _auto_filter_for_recipe

    return _auto_filter_for_recipe(recipe, filter_fqns=[])
