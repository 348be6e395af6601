"""Progressive structured pruning with torch-pruning: `+optim=prune`.

The method card is README.md beside this file (what it does, saves and costs, when not to use it,
how it keeps training correct). This module only gathers what the decisions need from the
trainer and acts on them; the parts live beside it:

- `settings`: the `callbacks.prune.*` keys, defaults and checks (`PruneSettings`);
- `pruner`: building the torch-pruning pruner, the layers left alone, the ratio a MACs target needs;
- `step`: one scheduled prune (rank 0's channel choice applied on every rank), Taylor gradients;
- `guard`: the trial prune at fit start, the check after each prune, the rollback when it broke;
- `schedule`, `surgery`, `tp_adapter`: the schedule, the tensor surgery, the one torch-pruning door.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from wattwise.compat import lightning as compat_lightning
from wattwise.compat.torch import reset_compiled_graphs
from wattwise.methods.base import STATUS_ACTIVE, EnergyMethod, StructureChange, announce_structure_change
from wattwise.methods.prune import guard, tp_adapter
from wattwise.methods.prune import pruner as pruners
from wattwise.methods.prune.schedule import schedule_ratios
from wattwise.methods.prune.settings import IMPORTANCES, PruneSettings
from wattwise.methods.prune.step import Gradients, add_gradients, prune_step, taylor_gradients
from wattwise.methods.shared.export import export_net, net_from_checkpoint, read_checkpoint, submodule_prefix
from wattwise.methods.shared.inputs import example_input
from wattwise.methods.shared.structure import STRUCTURE_KEY, restore_structure, tensor_shapes
from wattwise.methods.shared.target import target_net
from wattwise.utils.errors import ConfigError

log = logging.getLogger(__name__)

KEY = "callbacks.prune"
count_macs_params = tp_adapter.count_macs_params


class Prune(EnergyMethod):
    """Prunes `pl_module.net` (or the module itself) progressively during `fit`.

    Its arguments are `PruneSettings`' fields (settings.py: each with its check and a short
    doc; the card's table says more), plus `if_not_applicable`: `fail` (stop with one line) or
    `skip` (train unpruned and say why) where pruning does not apply (a net under
    `min_base_macs`, one torch-pruning cannot trace, prune or finds nothing to prune in, a prune
    that broke the net and was rolled back, FSDP/DeepSpeed).
    """

    name: ClassVar[str] = "prune"
    figure_prefix: ClassVar[str] = "prune/"
    summary_keys: ClassVar[tuple[str, ...]] = (
        "prune/base_macs",
        "prune/macs",
        "prune/base_params",
        "prune/params",
        "prune/ratio",
        "prune/macs_reduction",
    )
    recipes: ClassVar[dict[str, dict[str, Any]]] = {"green": {"min_base_macs": 100000}}

    def __init__(
        self,
        ratio: float | None = 0.5,
        macs_reduction: float | None = None,
        start_epoch: int = 1,
        end_epoch: int = 4,
        schedule: str = "cubic",
        importance: str = "magnitude",
        global_pruning: bool = False,
        round_to: int | None = 8,
        max_layer_ratio: float = 0.9,
        ignored_layers: Sequence[str] = (),
        reset_best_after_prune: bool = True,
        export_dir: str | None = None,
        export_program: bool = True,
        input_shape: Sequence[int] | None = None,
        min_base_macs: float | None = None,
        if_not_applicable: str = "fail",
    ) -> None:
        super().__init__(if_not_applicable=if_not_applicable)
        fields = PruneSettings.__dataclass_fields__
        self.settings = PruneSettings.build(KEY, **{k: v for k, v in locals().items() if k in fields})
        self.n_steps = self.settings.n_steps
        self.ignored_layers = list(self.settings.ignored_layers or [])
        # state carried in checkpoints
        self.steps_done = 0
        self.final_ratio: float | None = self.settings.channel_ratio  # None: found from macs_reduction
        self.base_macs: int | None = None
        self.base_params: int | None = None
        self.macs: int | None = None
        self.params: int | None = None
        self.history: list[dict[str, Any]] = []
        self._pruner_state: dict[str, Any] | None = None  # each layer's original width
        # runtime
        self.pruner: Any = None
        self._net: nn.Module | None = None
        self._example: torch.Tensor | None = None
        self._grad_acc: Gradients = {}
        self.exported: dict[str, Any] = {}

    # ---- checkpoint state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.pruner is not None:
            self._pruner_state = tp_adapter.capture_state(self.pruner, self._net)
        st = self._pruner_state or {}
        return {
            "steps_done": self.steps_done,
            "final_ratio": self.final_ratio,
            "base_macs": self.base_macs,
            "base_params": self.base_params,
            "macs": self.macs,
            "params": self.params,
            "history": copy.deepcopy(self.history),
            "init_channels": copy.deepcopy(st.get("init_channels")),
            "scope_init": copy.deepcopy(st.get("scope_init")),
            "init_total": st.get("init_total"),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps_done = int(state_dict["steps_done"])
        self.final_ratio = state_dict["final_ratio"]
        self.base_macs, self.base_params = state_dict["base_macs"], state_dict["base_params"]
        self.macs, self.params = state_dict["macs"], state_dict["params"]
        self.history = list(state_dict["history"])
        if state_dict.get("init_channels") is None:
            self._pruner_state = None
        else:
            self._pruner_state = {
                "init_channels": state_dict["init_channels"],
                "scope_init": state_dict["scope_init"],
                "init_total": state_dict["init_total"],
            }

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[STRUCTURE_KEY] = tensor_shapes(pl_module)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Resize any LightningModule to a pruned checkpoint's shapes before its weights load.

        Lightning reads the checkpoint (`ckpt_path=`, `resume=`, the test pass's best) only after
        `setup`, and restores the weights right after; the module needs no hook of its own.
        """
        super().setup(trainer, pl_module, stage)

        def resize(checkpoint: dict[str, Any]) -> None:
            if restore_structure(pl_module, checkpoint):
                log.info("prune: %s resized to the checkpoint's pruned shapes", type(pl_module).__name__)

        compat_lightning.after_checkpoint_read(trainer, self.state_key, resize)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        compat_lightning.after_checkpoint_read(trainer, self.state_key, None)

    # ---- set-up -----------------------------------------------------------------------------------
    @staticmethod
    def target_net(pl_module: L.LightningModule) -> nn.Module:
        return target_net(pl_module)  # methods/shared/target.py: energy_target_net(), `net`, or the module

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reason = self._not_applicable(trainer, pl_module)
        if reason is None:
            reason = self._set_up_pruner(trainer, pl_module)
        if reason is not None:
            self.step_aside(reason, trainer)
            return
        self.status = STATUS_ACTIVE
        max_epochs = trainer.max_epochs
        if self.settings.end_epoch >= max_epochs and max_epochs > 0 and trainer.is_global_zero:
            log.warning(
                "prune: %s.end_epoch=%d but trainer.max_epochs=%d: the final ratio is not reached, and no "
                "epoch is left to recover after the last prune",
                KEY,
                self.settings.end_epoch,
                max_epochs,
            )

    def _not_applicable(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
        """Why pruning cannot act on this strategy or net (None: it can); counts the base MACs."""
        strategy = type(trainer.strategy).__name__
        if any(s in strategy for s in ("FSDP", "DeepSpeed", "ModelParallel")):
            return f"pruning under {strategy} is not supported (use a single device or ddp)"
        net = self._net = self.target_net(pl_module)
        try:  # no sample to trace the net with: not a bad setting when the user gave no shape
            self._example = example_input(trainer.datamodule, net, self.settings.input_shape, KEY)
        except ConfigError as err:
            if self.settings.input_shape is not None:
                raise
            return str(err)
        if self.base_macs is None:  # a fresh run (a resumed one has them in its state)
            self.base_macs, self.base_params = count_macs_params(net, self._example[:1])
            self.macs, self.params = self.base_macs, self.base_params
        floor = self.settings.min_base_macs
        if floor is not None and self.base_macs < floor:
            return (
                f"{self.base_macs} MACs per sample < {KEY}.min_base_macs={floor:g}: too small "
                f"for fewer MACs to save time (lower {KEY}.min_base_macs to prune it anyway)"
            )
        return None

    def _set_up_pruner(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
        """Build the pruner (after finding the ratio for a MACs target) and try a prune on a copy;
        why not, if it cannot. Nothing torch-pruning raises gets out: it becomes the reason."""
        net, example, s = self._net, self._example, self.settings
        num_classes = (  # the head's width, left alone; else the width of what the net returns
            getattr(pl_module.hparams, "num_classes", None)
            or getattr(trainer.datamodule, "num_classes", None)
            or guard.output_width(net, example)
        )
        ignored = pruners.ignored_modules(net, self.ignored_layers, num_classes)
        try:
            if self.final_ratio is None:
                self.final_ratio = pruners.ratio_for_macs(net, example, s, self.base_macs, num_classes)
                log.info(
                    "prune: channel ratio %.3f targets %.2fx fewer MACs", self.final_ratio, s.macs_reduction
                )
            self.pruner = pruners.build_pruner(net, example, s, self.final_ratio, self.n_steps, ignored)
        except pruners.NotPrunable as err:
            return str(err)
        except Exception as err:  # noqa: BLE001 - e.g. the MACs target's trial prunes of copies
            return f"torch-pruning cannot prune {type(net).__name__} ({guard.one_line(err)}); {guard.WAY_OUT}"
        if self.steps_done < self.n_steps:  # a prune is to come: one on a copy must leave a net that runs
            reason = guard.trial_prune(net, example, s, self._ratio(self.steps_done + 1), num_classes)
            if reason is not None:
                self.pruner = None
                return reason
        if self._pruner_state is None:
            self._pruner_state = tp_adapter.capture_state(self.pruner, net)
        else:  # resumed: the pruner was built on the pruned net; give it the original widths
            tp_adapter.apply_state(self.pruner, net, self._pruner_state, self.steps_done)
        return None

    # ---- the schedule in training -----------------------------------------------------------------
    def prune_epochs(self) -> list[int]:
        return list(range(self.settings.start_epoch, self.settings.end_epoch + 1))

    def _due(self, epoch: int) -> int:
        """How many prunes the schedule has made by the start of `epoch`."""
        return max(0, min(self.n_steps, epoch - self.settings.start_epoch + 1))

    def _ratio(self, steps: int | None = None) -> float:
        """The cumulative channel ratio after `steps` prunes (default: those done)."""
        k = self.steps_done if steps is None else min(steps, self.n_steps)
        return schedule_ratios(self.final_ratio or 0.0, self.n_steps, self.settings.schedule)[k]

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        # Taylor importance needs gradients, which Lightning zeroes before epoch hooks: sum them here
        if self.pruner is None or self.settings.importance != "taylor":
            return
        if self._due(trainer.current_epoch + 1) > self.steps_done:
            add_gradients(self._net, self._grad_acc)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pruner is None:
            return
        due = self._due(trainer.current_epoch)
        if due <= self.steps_done:
            return
        steps_before = self.steps_done

        def prune() -> None:
            while self.steps_done < due:
                with taylor_gradients(self._net, self.pruner, self.settings.importance, self._grad_acc):
                    self.steps_done = prune_step(self._net, self.pruner, trainer.strategy, trainer.optimizers)

        problem = guard.prune_or_roll_back(self._net, self._example, trainer.optimizers, prune)
        if problem is not None:  # the net and optimizers are as they were before this epoch's prune
            self.steps_done, self.pruner = steps_before, None
            undone = f"rolled back to the net before it; {guard.WAY_OUT}"
            self.step_aside(f"{problem} at epoch {trainer.current_epoch}; {undone}", trainer)
            return
        self._after_prune(trainer, pl_module)
        self._record_prune(trainer, pl_module)

    def _after_prune(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Count the new MACs and tell DDP, the compiler and the other callbacks the net changed."""
        self.macs, self.params = count_macs_params(self._net, self._example[:1])
        if trainer.world_size > 1:  # DDP registered its hooks on the old parameters: wrap anew
            compat_lightning.rewrap_ddp(trainer.strategy)
        reset_compiled_graphs()  # new shapes would exhaust the recompile limit and run eager
        change = StructureChange(
            source=self.name,
            epoch=trainer.current_epoch,
            macs=self.macs,
            params=self.params,
            restart_best=self.settings.reset_best_after_prune,
        )
        announce_structure_change(trainer, pl_module, change)

    def _record_prune(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ratio = self._ratio()
        self.history.append(
            {"epoch": trainer.current_epoch, "ratio": ratio, "macs": self.macs, "params": self.params}
        )
        pl_module.log_dict(
            {"prune/macs": float(self.macs), "prune/params": float(self.params), "prune/ratio": ratio},
            on_step=False,
            on_epoch=True,
            rank_zero_only=True,
        )
        if trainer.is_global_zero:
            log.info(
                "prune: epoch %d step %d/%d ratio %.3f: MACs %.3g -> %.3g (%.2fx fewer), params %d",
                trainer.current_epoch,
                self.steps_done,
                self.n_steps,
                ratio,
                self.base_macs,
                self.macs,
                self.base_macs / max(self.macs, 1),
                self.params,
            )

    # ---- results ----------------------------------------------------------------------------------
    def _export_weights(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> tuple[nn.Module, dict[str, Any]]:
        """The net to export: the best checkpoint's weights when there is one, so that the export
        and test/acc (measured on `ckpt_path="best"`) are the same net; else the last epoch's."""
        last = {"weights": "last", "epoch": max(trainer.current_epoch - 1, 0)}
        cb = trainer.checkpoint_callback
        path = getattr(cb, "best_model_path", "") if cb is not None else ""
        prefix = submodule_prefix(pl_module, self._net)
        if not path or not Path(path).is_file() or prefix is None:
            return self._net, last
        ckpt = read_checkpoint(path, "best checkpoint")  # weights only (methods/shared/export.py)
        net = net_from_checkpoint(self._net, ckpt, prefix)
        return net, {"weights": "best", "epoch": int(ckpt.get("epoch", -1)), "checkpoint": str(path)}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        export_dir = self.settings.export_dir
        if export_dir is None or not trainer.is_global_zero or self.pruner is None:
            return
        net, source = self._export_weights(trainer, pl_module)
        written = export_net(net, self._example, Path(export_dir), self.settings.export_program)
        self.exported = {**written, **source}
        log.info(
            "prune: exported the %s weights (epoch %s) to %s",
            source["weights"],
            source["epoch"],
            export_dir,
        )

    def method_figures(self) -> dict[str, Any]:
        if self.base_macs is None:
            return {}
        out: dict[str, Any] = {
            "prune/base_macs": self.base_macs,
            "prune/macs": self.macs,
            "prune/base_params": self.base_params,
            "prune/params": self.params,
            "prune/ratio": self._ratio(),
            "prune/macs_reduction": self.base_macs / max(self.macs or 1, 1),
        }
        out.update({f"prune/export_{k}": v for k, v in self.exported.items()})
        return out

    @classmethod
    def report_rows(cls, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        rows = super().report_rows(summary)
        if rows:
            return rows
        macs, base = summary.get("prune/macs"), summary.get("prune/base_macs")
        if macs is not None and base:
            rows.append(("MACs (prune)", f"{macs:,.0f} of {base:,.0f} ({macs / base:.2f}x)"))
        return rows


__all__: list[str] = [
    "IMPORTANCES",
    "STRUCTURE_KEY",
    "Prune",
    "PruneSettings",
    "count_macs_params",
    "export_net",
    "restore_structure",
    "schedule_ratios",
    "tensor_shapes",
]
