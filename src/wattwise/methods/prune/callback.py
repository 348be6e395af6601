"""Progressive structured pruning with torch-pruning: `+optim=prune`.

Method card
-----------
What it does
    Removes whole channels (conv filters, BN channels, linear units, and the matching inputs of
    the next layer) from the model's net *while it trains*, in several steps between
    `start_epoch` and `end_epoch`, following a cubic (Zhu & Gupta 2017) or linear schedule
    towards a target channel ratio (`ratio`) or a MACs reduction (`macs_reduction`). Channels are
    ranked by weight magnitude (default), Taylor first-order saliency or BN scale, and counts are
    rounded (`round_to`) so the pruned widths suit GPU kernels. The classifier head (every layer
    whose output width is the number of classes) and `ignored_layers` are left alone.
What it saves
    The tensors really shrink, so every later forward/backward costs fewer MACs, less time and
    fewer joules; inference of the exported net is cheaper too. On digits with the CNN the
    defaults remove ~4x of the MACs (see the card, README.md beside
    this file, and bench/RESULTS.md for measured ratios).
    Lightning's own `ModelPruning` only masks weights: MACs and step time stay the same.
What it costs
    Some accuracy (recovered by the epochs after `end_epoch`), a pruning pass per scheduled epoch
    (a forward trace plus an importance ranking: milliseconds for small nets), one MACs count per
    prune. Taylor importance keeps one extra copy of the gradients during the epoch before a prune.
When not to use it
    Nets it does not apply to: under `min_base_macs`, untraceable by torch-pruning, or with no
    prunable channel group (a GRU), and FSDP/DeepSpeed. There it steps aside at fit start: one
    line naming the key with `if_not_applicable=fail` (the default), or the run goes on unpruned
    with `prune/status: skipped` and the reason with `skip` (what `green` sets). Also very short
    runs where no epoch is left after the schedule to recover, and when the test metric must come
    from an unpruned net.
How it composes
    With AMP/bf16 (importance is read from fp32 master weights; the optimizer object and its
    precision plugin are kept), early stopping (it only changes the architecture at epoch starts;
    the best-checkpoint tracking is restarted after each prune so `ckpt_path="best"` and
    early stopping compare nets of the final architecture), DDP (every rank applies the channel
    indices chosen on rank 0; the DDP wrapper is rebuilt), and torch.compile (the compiler is reset
    after a prune so the new shapes recompile instead of silently falling back to eager).

Correctness after a prune:
    train/eval mode of every submodule is restored (building a pruner and pruning leave the net
    in eval mode); the optimizer keeps the same object (so the LR scheduler and precision plugin
    go on unchanged) with every parameter whose tensor changed (raw `nn.Parameter`s and an
    attention's `out_proj` included) swapped for its new tensor, its momentum/Adam state cut with
    the same index selections as the weight; frozen parameters stay frozen; attention heads keep
    equal widths. The other callbacks hear of the new shape through `announce_structure_change`.
    The net is traced with a couple of real samples (their dtype: int64 tokens work), read
    without touching the global RNG. At fit end the best checkpoint's weights are exported
    (`pruned_net.pt`, and `pruned_net.pt2` with a dynamic batch dimension).
    Checkpoints store every tensor's shape (`checkpoint["wattwise_structure"]`), and
    `ClassifierModule.on_load_checkpoint` calls `restore_structure` so `ckpt_path=...`,
    `trainer.test(ckpt_path="best")` and `load_from_checkpoint` rebuild the pruned architecture
    before the weights load. The callback's own state (steps done, initial channel counts)
    continues the schedule exactly where it was.
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
from wattwise.methods.prune import tp_adapter
from wattwise.methods.prune.schedule import SCHEDULES, schedule_ratios
from wattwise.methods.prune.surgery import keep_heads_equal, prune_group
from wattwise.methods.shared.export import export_net, net_from_checkpoint, submodule_prefix
from wattwise.methods.shared.inputs import example_input
from wattwise.methods.shared.structure import (
    STRUCTURE_KEY,
    modes,
    restore_modes,
    restore_structure,
    tensor_shapes,
)
from wattwise.utils.errors import ConfigError

log = logging.getLogger(__name__)

IMPORTANCES = ("magnitude", "taylor", "bn_scale")
KEY = "callbacks.prune"
count_macs_params = tp_adapter.count_macs_params


class Prune(EnergyMethod):
    """Prunes `pl_module.net` (or the module itself) progressively during `fit`. See the module docstring.

    Args:
        ratio: final fraction of channels removed from each prunable layer, in [0, 1).
        macs_reduction: instead of `ratio`, a target factor base_MACs / final_MACs (> 1); the channel
            ratio that reaches it is found at fit start by pruning copies of the net.
        start_epoch, end_epoch: first and last epoch (0-based) at whose start a prune happens;
            one prune per epoch in between.
        schedule: `cubic` (default) or `linear`.
        importance: `magnitude` (L2 of each channel's weights), `taylor` (|w * grad|, gradients
            summed over the epoch before each prune) or `bn_scale` (|gamma| of the BatchNorm).
        global_pruning: rank channels across layers instead of pruning each layer by `ratio`.
        round_to: keep channel counts multiples of this (null: no rounding).
        max_layer_ratio: no layer loses more than this fraction (matters with global pruning).
        ignored_layers: names of submodules of the net to leave alone (the head is always left).
        reset_best_after_prune: after each prune, restart the best-score tracking of checkpoint and
            early-stopping callbacks, so "best" refers to the final architecture and patience
            restarts while the net recovers.
        export_dir: where `pruned_net.pt` (and `pruned_net.pt2`) go at fit end (null: no export).
            They hold the best checkpoint's weights when there is one (what test/acc measures).
        export_program: also write a `torch.export` program (loads without any wattwise code).
        input_shape: one sample's shape, to trace the net with float noise instead of real samples
            (null: a couple of samples from the datamodule's loaders, in their own dtype).
        min_base_macs: do not prune a net with fewer MACs per sample than this (null: always
            prune). Below ~1e5 MACs a step is framework overhead, not arithmetic, so fewer MACs
            save nothing: the digits MLP (19 k MACs) measured 1.04x the energy and -1.1 points
            pruned. `green` sets it; `+optim=prune` alone prunes whatever it is given.
        if_not_applicable: `fail` (stop with one line) or `skip` (train unpruned and say why) when
            pruning does not apply: a net under `min_base_macs`, one torch-pruning cannot trace or
            finds nothing to prune in (a GRU), FSDP/DeepSpeed.
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
        if macs_reduction is None:
            if ratio is None or not (0.0 <= float(ratio) < 1.0):
                raise ConfigError(f"{KEY}.ratio must be in [0, 1), got {ratio}")
        elif not float(macs_reduction) > 1.0:
            raise ConfigError(
                f"{KEY}.macs_reduction must be > 1 (base MACs / final MACs), got {macs_reduction}"
            )
        if not isinstance(start_epoch, int) or start_epoch < 0:
            raise ConfigError(f"{KEY}.start_epoch must be an integer >= 0, got {start_epoch}")
        if not isinstance(end_epoch, int) or end_epoch < start_epoch:
            raise ConfigError(
                f"{KEY}.end_epoch must be an integer >= {KEY}.start_epoch ({start_epoch}), got {end_epoch}"
            )
        if schedule not in SCHEDULES:
            raise ConfigError(f"{KEY}.schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        if importance not in IMPORTANCES:
            raise ConfigError(f"{KEY}.importance must be one of {list(IMPORTANCES)}, got {importance!r}")
        if importance == "taylor" and start_epoch < 1:
            raise ConfigError(
                f"{KEY}.start_epoch must be >= 1 with importance=taylor (gradients are gathered in the "
                f"epoch before a prune), got {start_epoch}"
            )
        if round_to is not None and (not isinstance(round_to, int) or round_to < 1):
            raise ConfigError(f"{KEY}.round_to must be a positive integer or null, got {round_to}")
        if not (0.0 < float(max_layer_ratio) < 1.0):
            raise ConfigError(f"{KEY}.max_layer_ratio must be in (0, 1), got {max_layer_ratio}")
        if min_base_macs is not None and not float(min_base_macs) >= 0:
            raise ConfigError(f"{KEY}.min_base_macs must be >= 0 or null, got {min_base_macs}")
        if input_shape is not None and (
            isinstance(input_shape, str) or not all(isinstance(d, int) and d > 0 for d in input_shape)
        ):
            raise ConfigError(
                f"{KEY}.input_shape must be a list of positive integers or null, got {input_shape}"
            )
        self.ratio = None if macs_reduction is not None else float(ratio)
        self.macs_reduction = None if macs_reduction is None else float(macs_reduction)
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.n_steps = end_epoch - start_epoch + 1
        self.schedule = schedule
        self.importance = importance
        self.global_pruning = bool(global_pruning)
        self.round_to = round_to
        self.max_layer_ratio = float(max_layer_ratio)
        self.ignored_layers = list(ignored_layers or [])
        self.reset_best_after_prune = reset_best_after_prune
        self.export_dir = export_dir
        self.export_program = export_program
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.min_base_macs = None if min_base_macs is None else float(min_base_macs)
        # state carried in checkpoints
        self.steps_done = 0
        self.final_ratio: float | None = self.ratio
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
        self._grad_acc: dict[nn.Parameter, torch.Tensor] = {}
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

    # ---- set-up -----------------------------------------------------------------------------------
    @staticmethod
    def target_net(pl_module: L.LightningModule) -> nn.Module:
        net = getattr(pl_module, "net", None)
        return net if isinstance(net, nn.Module) else pl_module

    def _ignored(self, net: nn.Module, num_classes: int | None) -> list[nn.Module]:
        modules = dict(net.named_modules())
        ignored = []
        for name in self.ignored_layers:
            if name not in modules:
                names = [n for n in modules if n][:20]
                raise ConfigError(
                    f"{KEY}.ignored_layers: no layer named {name!r} in the net; some names: {names}"
                )
            ignored.append(modules[name])
        if num_classes is not None:  # the classifier head: its output width is the number of classes
            for m in net.modules():
                if (isinstance(m, nn.Linear) and m.out_features == num_classes) or (
                    isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == num_classes
                ):
                    ignored.append(m)
        return ignored

    def _build_pruner(self, net: nn.Module, ratio: float, steps: int, ignored: list[nn.Module]) -> Any:
        """A pruner over `net`; raises NotPrunable where torch-pruning cannot trace it or finds nothing."""
        kind = self.schedule
        saved = modes(net)
        try:
            pruner = tp_adapter.build_pruner(
                net,
                self._example,
                importance_kind=self.importance,
                global_pruning=self.global_pruning,
                ratio=ratio,
                max_layer_ratio=self.max_layer_ratio,
                steps=steps,
                scheduler=lambda r, n: schedule_ratios(r, n, kind),
                ignored_layers=ignored,
                round_to=self.round_to,
            )
            if not tp_adapter.has_groups(pruner):
                raise _NotPrunable(
                    f"torch-pruning found no prunable channel group in {type(net).__name__} "
                    f"(all layers ignored by {KEY}.ignored_layers or as the head, or of types it "
                    f"cannot prune, e.g. a GRU); nothing to prune"
                )
        except _NotPrunable:
            raise
        except Exception as err:  # noqa: BLE001 - reported in one line, with the key to change
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise _NotPrunable(
                f"torch-pruning could not trace {type(net).__name__} ({type(err).__name__}: {first}); "
                f"leave the offending layers out with {KEY}.ignored_layers"
            ) from err
        finally:
            restore_modes(saved)  # building a pruner leaves the net in eval mode
        return pruner

    def _one_shot(self, net: nn.Module, ratio: float, ignored: list[nn.Module]) -> None:
        pruner = self._build_pruner(net, ratio, 1, ignored)
        for group in tp_adapter.step_groups(pruner):
            idxs = keep_heads_equal(pruner, group, tp_adapter.group_root_idxs(group))
            if idxs:
                prune_group(tp_adapter.regroup(pruner, group, idxs), net, [])

    def _ratio_for_macs(self, net: nn.Module, num_classes: int | None) -> float:
        """Bisect the channel ratio whose one-shot prune of a copy reaches base/macs_reduction MACs."""
        assert self.base_macs is not None and self.macs_reduction is not None
        target = self.base_macs / self.macs_reduction

        def macs_at(ratio: float) -> int:
            trial = copy.deepcopy(net)
            self._one_shot(trial, ratio, self._ignored(trial, num_classes))
            return count_macs_params(trial, self._example[:1])[0]

        lo, hi = 0.0, self.max_layer_ratio
        for _ in range(10):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if macs_at(mid) > target else (lo, mid)
        macs = macs_at(hi)
        if macs > target * 1.02:
            log.warning(
                "prune: %s=%.2f is out of reach (best %.2fx at ratio %.2f, max_layer_ratio=%.2f)",
                f"{KEY}.macs_reduction",
                self.macs_reduction,
                self.base_macs / max(macs, 1),
                hi,
                self.max_layer_ratio,
            )
        return hi

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        strategy = type(trainer.strategy).__name__
        if any(s in strategy for s in ("FSDP", "DeepSpeed", "ModelParallel")):
            self.step_aside(
                f"pruning under {strategy} is not supported (use a single device or ddp)",
                trainer,
            )
            return
        net = self.target_net(pl_module)
        self._net = net
        self._example = example_input(trainer.datamodule, net, self.input_shape, KEY)
        num_classes = getattr(pl_module.hparams, "num_classes", None) or getattr(
            trainer.datamodule, "num_classes", None
        )
        if self.base_macs is None:  # a fresh run (a resumed one has them in its state)
            self.base_macs, self.base_params = count_macs_params(net, self._example[:1])
            self.macs, self.params = self.base_macs, self.base_params
        if self.min_base_macs is not None and self.base_macs < self.min_base_macs:
            self.step_aside(
                f"{self.base_macs} MACs per sample < {KEY}.min_base_macs={self.min_base_macs:g}: too small "
                f"for fewer MACs to save time (lower {KEY}.min_base_macs to prune it anyway)",
                trainer,
            )
            return
        ignored = self._ignored(net, num_classes)
        try:
            if self.final_ratio is None:
                self.final_ratio = self._ratio_for_macs(net, num_classes)
                log.info(
                    "prune: channel ratio %.3f targets %.2fx fewer MACs",
                    self.final_ratio,
                    self.macs_reduction,
                )
            self.pruner = self._build_pruner(net, self.final_ratio, self.n_steps, ignored)
        except _NotPrunable as err:
            self.step_aside(str(err), trainer)
            return
        if self._pruner_state is None:
            self._pruner_state = tp_adapter.capture_state(self.pruner, net)
        else:  # resumed: the pruner was built on the pruned net; give it the original widths
            tp_adapter.apply_state(self.pruner, net, self._pruner_state, self.steps_done)
        self.status = STATUS_ACTIVE
        if self.end_epoch >= trainer.max_epochs and trainer.max_epochs > 0 and trainer.is_global_zero:
            log.warning(
                "prune: %s.end_epoch=%d but trainer.max_epochs=%d: the final ratio is not reached, and no "
                "epoch is left to recover after the last prune",
                KEY,
                self.end_epoch,
                trainer.max_epochs,
            )

    # ---- the schedule in training -----------------------------------------------------------------
    def prune_epochs(self) -> list[int]:
        return list(range(self.start_epoch, self.end_epoch + 1))

    def _due(self, epoch: int) -> int:
        return max(0, min(self.n_steps, epoch - self.start_epoch + 1))

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        # Taylor importance needs gradients, which Lightning zeroes before epoch hooks: sum them here
        if self.pruner is None or self.importance != "taylor":
            return
        if self._due(trainer.current_epoch + 1) <= self.steps_done:
            return
        for p in self._net.parameters():
            if p.grad is not None:
                acc = self._grad_acc.get(p)
                g = p.grad.detach().float()
                self._grad_acc[p] = g.clone() if acc is None else acc.add_(g)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pruner is None:
            return
        due = self._due(trainer.current_epoch)
        if due <= self.steps_done:
            return
        while self.steps_done < due:
            self._prune_once(trainer)
        self._after_prune(trainer, pl_module)
        ratio = schedule_ratios(self.final_ratio, self.n_steps, self.schedule)[self.steps_done]
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

    def _prune_once(self, trainer: L.Trainer) -> None:
        net, pruner = self._net, self.pruner
        saved = modes(net)
        taylor_ok = True
        if self.importance == "taylor":
            taylor_ok = bool(self._grad_acc)
            if not taylor_ok:  # e.g. resumed right before a prune: no gradients gathered yet
                log.warning("prune: no gradients gathered for Taylor importance; using magnitude this step")
                tp_adapter.set_importance(pruner, "magnitude")
            for p, g in self._grad_acc.items():
                p.grad = g.to(p.dtype)
        with torch.no_grad():
            groups = tp_adapter.step_groups(pruner)
            names = {m: n for n, m in net.named_modules()}
            plan = []
            for group in groups:
                root, _ = tp_adapter.group_root(group)
                idxs = keep_heads_equal(pruner, group, tp_adapter.group_root_idxs(group))
                plan.append((names.get(root, repr(root)), idxs))
            # every rank applies rank 0's choice (the same when weights are in sync; now by construction)
            plan0 = trainer.strategy.broadcast(plan, src=0)
            if [n for n, _ in plan0] != [n for n, _ in plan]:
                raise RuntimeError(f"{KEY}: ranks disagree on the pruning groups: {plan0} vs {plan}")
            for group, (_, idxs) in zip(groups, plan0):
                if idxs:
                    prune_group(tp_adapter.regroup(pruner, group, idxs), net, trainer.optimizers)
        self.steps_done = tp_adapter.current_step(pruner)
        restore_modes(saved)  # a prune leaves the net in eval mode
        if self.importance == "taylor":
            for p in net.parameters():
                p.grad = None
            self._grad_acc = {}
            if not taylor_ok:
                tp_adapter.set_importance(pruner, self.importance)

    def _after_prune(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.macs, self.params = count_macs_params(self._net, self._example[:1])
        strategy = trainer.strategy
        if trainer.world_size > 1:  # DDP registered its hooks on the old parameters: wrap anew
            compat_lightning.rewrap_ddp(strategy)
        reset_compiled_graphs()  # new shapes would exhaust the recompile limit and run eager
        announce_structure_change(
            trainer,
            pl_module,
            StructureChange(
                source=self.name,
                epoch=trainer.current_epoch,
                macs=self.macs,
                params=self.params,
                restart_best=self.reset_best_after_prune,
            ),
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
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        net = net_from_checkpoint(self._net, ckpt, prefix)
        return net, {"weights": "best", "epoch": int(ckpt.get("epoch", -1)), "checkpoint": str(path)}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.export_dir is None or not trainer.is_global_zero or self.pruner is None:
            return
        net, source = self._export_weights(trainer, pl_module)
        written = export_net(net, self._example, Path(self.export_dir), self.export_program)
        self.exported = {**written, **source}
        log.info(
            "prune: exported the %s weights (epoch %s) to %s",
            source["weights"],
            source["epoch"],
            self.export_dir,
        )

    def method_figures(self) -> dict[str, Any]:
        if self.base_macs is None:
            return {}
        out: dict[str, Any] = {
            "prune/base_macs": self.base_macs,
            "prune/macs": self.macs,
            "prune/base_params": self.base_params,
            "prune/params": self.params,
            "prune/ratio": schedule_ratios(self.final_ratio or 0.0, self.n_steps, self.schedule)[
                self.steps_done
            ],
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


class _NotPrunable(Exception):
    """torch-pruning cannot act on this net (the callback steps aside)."""


__all__: list[str] = [
    "STRUCTURE_KEY",
    "Prune",
    "count_macs_params",
    "export_net",
    "restore_structure",
    "schedule_ratios",
    "tensor_shapes",
]
