"""Deliberately broken energy methods: the contract tests must catch each of them."""

from __future__ import annotations

from typing import Any

from wattwise.methods.base import STATUS_ACTIVE, EnergyMethod


class MissingFigure(EnergyMethod):
    """Promises a figure it never reports."""

    name = "broken"
    figure_prefix = "broken/"
    summary_keys = ("broken/count",)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.status = STATUS_ACTIVE


class ForgetfulCounter(EnergyMethod):
    """Counts epochs and saves the count, but a resumed run starts again from zero."""

    name = "broken"
    figure_prefix = "broken/"
    summary_keys = ("broken/epochs",)

    def __init__(self) -> None:
        super().__init__()
        self.epochs = 0

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.status = STATUS_ACTIVE

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.epochs += 1

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass  # the bug: the saved count is ignored

    def method_figures(self) -> dict[str, Any]:
        return {"broken/epochs": self.epochs}
