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
    defaults remove ~4x of the MACs (see docs/prune.md and bench/RESULTS.md for measured ratios).
    Lightning's own `ModelPruning` only masks weights: MACs and step time stay the same.
What it costs
    Some accuracy (recovered by the epochs after `end_epoch`), a pruning pass per scheduled epoch
    (a forward trace plus an importance ranking: milliseconds for small nets), one MACs count per
    prune. Taylor importance keeps one extra copy of the gradients during the epoch before a prune.
When not to use it
    Nets torch-pruning cannot trace (it fails at fit start with a message), very short runs where
    no epoch is left after the schedule to recover, FSDP/DeepSpeed (refused at fit start), and
    when the test metric must come from an unpruned net.
How it composes
    With AMP/bf16 (importance is read from fp32 master weights; the optimizer object and its
    precision plugin are kept), early stopping (it only changes the architecture at epoch starts;
    the best-checkpoint tracking is restarted after each prune so `ckpt_path="best"` and
    early stopping compare nets of the final architecture), DDP (every rank applies the channel
    indices chosen on rank 0; the DDP wrapper is rebuilt), and torch.compile (the compiler is reset
    after a prune so the new shapes recompile instead of silently falling back to eager).

Correctness after a prune (the traps in shared/notes/field-notes.md):
    train/eval mode of every submodule is restored; the optimizer keeps the same object (so the
    LR scheduler and precision plugin go on unchanged) with each pruned parameter swapped for its
    new tensor and its momentum/Adam state sliced like the weight; frozen parameters stay frozen.
    Checkpoints store every tensor's shape (`checkpoint["wattwise_structure"]`), and
    `ClassifierModule.on_load_checkpoint` calls `restore_structure` so `ckpt_path=...`,
    `trainer.test(ckpt_path="best")` and `load_from_checkpoint` rebuild the pruned architecture
    before the weights load. The callback's own state (steps done, initial channel counts)
    continues the schedule exactly where it was.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from wattwise.optim.base import EnergyMethod

log = logging.getLogger(__name__)

STRUCTURE_KEY = "wattwise_structure"
SCHEDULES = ("cubic", "linear")
IMPORTANCES = ("magnitude", "taylor", "bn_scale")
KEY = "callbacks.prune"


# ---- architecture restore (used by ClassifierModule.on_load_checkpoint) --------------------------
def tensor_shapes(module: nn.Module) -> dict[str, list[int]]:
    """Shape of every parameter and buffer, by its state-dict name."""
    out = {n: list(p.shape) for n, p in module.named_parameters()}
    out.update({n: list(b.shape) for n, b in module.named_buffers()})
    return out


def _sync_attributes(mod: nn.Module) -> None:
    """Make a resized layer's size attributes agree with its tensors."""
    w = getattr(mod, "weight", None)
    if isinstance(mod, nn.modules.conv._ConvNd) and w is not None:
        if mod.transposed:
            mod.in_channels, mod.out_channels = w.shape[0], w.shape[1] * mod.groups
        else:
            mod.out_channels, mod.in_channels = w.shape[0], w.shape[1] * mod.groups
    elif isinstance(mod, nn.Linear) and w is not None:
        mod.out_features, mod.in_features = w.shape[0], w.shape[1]
    elif isinstance(mod, nn.modules.batchnorm._NormBase):
        ref = w if w is not None else mod.running_mean
        if ref is not None:
            mod.num_features = ref.shape[0]
    elif isinstance(mod, nn.GroupNorm) and w is not None:
        mod.num_channels = w.shape[0]
    elif isinstance(mod, nn.LayerNorm) and w is not None:
        mod.normalized_shape = tuple(w.shape)


def restore_structure(module: nn.Module, checkpoint: dict[str, Any]) -> bool:
    """Resize `module`'s tensors to the shapes saved in `checkpoint` (before its weights load).

    Works in both directions (a pruned net loading a wider checkpoint, a fresh net loading a
    pruned one). The values are left uninitialised: the state dict that follows fills them.
    Returns True when something was resized.
    """
    shapes: dict[str, list[int]] | None = checkpoint.get(STRUCTURE_KEY)
    if not shapes:
        return False
    changed_any = False
    for mod_name, mod in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        changed = False
        for table, make in ((mod._parameters, "param"), (mod._buffers, "buffer")):
            for name, t in list(table.items()):
                shape = shapes.get(prefix + name)
                if t is None or shape is None or list(t.shape) == list(shape):
                    continue
                new = torch.empty(shape, dtype=t.dtype, device=t.device)
                table[name] = nn.Parameter(new, requires_grad=t.requires_grad) if make == "param" else new
                changed = True
        if changed:
            _sync_attributes(mod)
            changed_any = True
    return changed_any


# ---- the schedule --------------------------------------------------------------------------------
def schedule_ratios(final_ratio: float, n_steps: int, kind: str = "cubic") -> list[float]:
    """Cumulative channel ratio after k = 0..n_steps prunes (against the original widths).

    cubic (Zhu & Gupta 2017): r_k = R (1 - (1 - k/n)^3), most channels go early while the net is
    still plastic; linear: r_k = R k/n.
    """
    out = []
    for k in range(n_steps + 1):
        p = k / n_steps if n_steps else 1.0
        out.append(final_ratio * (p if kind == "linear" else 1.0 - (1.0 - p) ** 3))
    return out


def _modes(net: nn.Module) -> dict[nn.Module, bool]:
    return {m: m.training for m in net.modules()}


def _restore_modes(modes: dict[nn.Module, bool]) -> None:
    for m, training in modes.items():
        m.training = training


@torch.no_grad()
def count_macs_params(net: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(net, example)  # works on a deep copy
    return int(macs), int(params)


class StructuredPruning(EnergyMethod):
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
        export_program: also write a `torch.export` program (loads without any wattwise code).
        input_shape: (C, H, W) of one sample for tracing; null: the datamodule's `input_shape`.
        min_base_macs: do not prune a net with fewer MACs per sample than this (null: always
            prune). Below ~1e5 MACs a step is framework overhead, not arithmetic, so fewer MACs
            save nothing: the digits MLP (19 k MACs) measured 1.04x the energy and -1.1 points
            pruned. `green` sets it; `+optim=prune` alone prunes whatever it is given.
    """

    name = "prune"
    figure_prefix = "prune/"
    recipes = {"green": {"min_base_macs": 100000}}

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
        super().__init__(if_not_applicable)
        if macs_reduction is None:
            if ratio is None or not (0.0 <= float(ratio) < 1.0):
                raise ValueError(f"{KEY}.ratio must be in [0, 1), got {ratio}")
        elif not float(macs_reduction) > 1.0:
            raise ValueError(
                f"{KEY}.macs_reduction must be > 1 (base MACs / final MACs), got {macs_reduction}"
            )
        if not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(f"{KEY}.start_epoch must be an integer >= 0, got {start_epoch}")
        if not isinstance(end_epoch, int) or end_epoch < start_epoch:
            raise ValueError(
                f"{KEY}.end_epoch must be an integer >= {KEY}.start_epoch ({start_epoch}), got {end_epoch}"
            )
        if schedule not in SCHEDULES:
            raise ValueError(f"{KEY}.schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        if importance not in IMPORTANCES:
            raise ValueError(f"{KEY}.importance must be one of {list(IMPORTANCES)}, got {importance!r}")
        if importance == "taylor" and start_epoch < 1:
            raise ValueError(
                f"{KEY}.start_epoch must be >= 1 with importance=taylor (gradients are gathered in the "
                f"epoch before a prune), got {start_epoch}"
            )
        if round_to is not None and (not isinstance(round_to, int) or round_to < 1):
            raise ValueError(f"{KEY}.round_to must be a positive integer or null, got {round_to}")
        if not (0.0 < float(max_layer_ratio) < 1.0):
            raise ValueError(f"{KEY}.max_layer_ratio must be in (0, 1), got {max_layer_ratio}")
        if min_base_macs is not None and not float(min_base_macs) >= 0:
            raise ValueError(f"{KEY}.min_base_macs must be >= 0 or null, got {min_base_macs}")
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
        self._init_channels: dict[str, tuple[int, int]] | None = None
        self._scope_init: dict[str, int] | None = None
        self._init_total: int | None = None
        # runtime
        self.pruner: Any = None
        self._net: nn.Module | None = None
        self._example: torch.Tensor | None = None
        self._grad_acc: dict[nn.Parameter, torch.Tensor] = {}
        self.exported: dict[str, str] = {}

    # ---- checkpoint state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.pruner is not None:
            self._capture_pruner_state()
        return {
            "steps_done": self.steps_done,
            "final_ratio": self.final_ratio,
            "base_macs": self.base_macs,
            "base_params": self.base_params,
            "macs": self.macs,
            "params": self.params,
            "history": copy.deepcopy(self.history),
            "init_channels": copy.deepcopy(self._init_channels),
            "scope_init": copy.deepcopy(self._scope_init),
            "init_total": self._init_total,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps_done = int(state_dict["steps_done"])
        self.final_ratio = state_dict["final_ratio"]
        self.base_macs, self.base_params = state_dict["base_macs"], state_dict["base_params"]
        self.macs, self.params = state_dict["macs"], state_dict["params"]
        self.history = list(state_dict["history"])
        self._init_channels = state_dict["init_channels"]
        self._scope_init = state_dict["scope_init"]
        self._init_total = state_dict["init_total"]

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[STRUCTURE_KEY] = tensor_shapes(pl_module)

    # ---- set-up -----------------------------------------------------------------------------------
    @staticmethod
    def target_net(pl_module: L.LightningModule) -> nn.Module:
        net = getattr(pl_module, "net", None)
        return net if isinstance(net, nn.Module) else pl_module

    def _example_input(self, trainer: L.Trainer, net: nn.Module) -> torch.Tensor:
        shape = self.input_shape or getattr(trainer.datamodule, "input_shape", None)
        if shape is None:
            raise ValueError(
                f"{KEY}.input_shape is needed: the datamodule has no `input_shape` to trace the net with"
            )
        ref = next(net.parameters())
        dtype = ref.dtype if ref.dtype.is_floating_point else torch.float32
        # A private generator: tracing must not consume the global RNG, or a pruned run would
        # shuffle and initialise differently from its baseline, which confounds comparisons.
        example = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
        return example.to(device=ref.device, dtype=dtype)

    def _ignored(self, net: nn.Module, num_classes: int | None) -> list[nn.Module]:
        modules = dict(net.named_modules())
        ignored = []
        for name in self.ignored_layers:
            if name not in modules:
                names = [n for n in modules if n][:20]
                raise ValueError(
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

    def _importance(self) -> Any:
        import torch_pruning as tp

        if self.importance == "taylor":
            return tp.importance.TaylorImportance()
        if self.importance == "bn_scale":
            return tp.importance.BNScaleImportance()
        return tp.importance.MagnitudeImportance(p=2)

    def _build_pruner(self, net: nn.Module, ratio: float, steps: int, num_classes: int | None) -> Any:
        import torch_pruning as tp

        kind = self.schedule
        modes = _modes(net)
        try:
            pruner = tp.pruner.BasePruner(
                net,
                self._example,
                importance=self._importance(),
                global_pruning=self.global_pruning,
                pruning_ratio=ratio,
                max_pruning_ratio=self.max_layer_ratio,
                iterative_steps=steps,
                iterative_pruning_ratio_scheduler=lambda r, n: schedule_ratios(r, n, kind),
                ignored_layers=self._ignored(net, num_classes),
                round_to=self.round_to,
            )
        except ValueError:
            raise
        except Exception as err:  # noqa: BLE001 - re-raised with the key to change
            raise ValueError(
                f"{KEY}: torch-pruning could not trace {type(net).__name__} "
                f"({type(err).__name__}: {err}). Leave the offending layers out with {KEY}.ignored_layers, "
                f"or drop +optim=prune."
            ) from err
        finally:
            _restore_modes(modes)  # trap 1: building a pruner leaves the net in eval mode
        groups = list(pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers))
        if not groups:
            raise ValueError(
                f"{KEY}: torch-pruning found no prunable channel group in {type(net).__name__} "
                f"(all layers ignored or untraceable); nothing to prune"
            )
        return pruner

    def _ratio_for_macs(self, net: nn.Module, num_classes: int | None) -> float:
        """Bisect the channel ratio whose one-shot prune of a copy reaches base/macs_reduction MACs."""
        assert self.base_macs is not None and self.macs_reduction is not None
        target = self.base_macs / self.macs_reduction
        lo, hi = 0.0, self.max_layer_ratio
        for _ in range(10):
            mid = (lo + hi) / 2
            trial = copy.deepcopy(net)
            pruner = self._build_pruner(trial, mid, 1, num_classes)
            pruner.step()
            macs, _ = count_macs_params(trial, self._example)
            lo, hi = (mid, hi) if macs > target else (lo, mid)
        trial = copy.deepcopy(net)
        pruner = self._build_pruner(trial, hi, 1, num_classes)
        pruner.step()
        macs, _ = count_macs_params(trial, self._example)
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
        name = type(trainer.strategy).__name__
        if any(s in name for s in ("FSDP", "DeepSpeed", "ModelParallel")):
            raise ValueError(f"{KEY}: pruning under {name} is not supported (use single device or ddp)")
        net = self.target_net(pl_module)
        self._net = net
        self._example = self._example_input(trainer, net)
        num_classes = getattr(pl_module.hparams, "num_classes", None) or getattr(
            trainer.datamodule, "num_classes", None
        )
        if self.base_macs is None:  # a fresh run (a resumed one has them in its state)
            self.base_macs, self.base_params = count_macs_params(net, self._example)
            self.macs, self.params = self.base_macs, self.base_params
        if self.min_base_macs is not None and self.base_macs < self.min_base_macs:
            self.skipped_reason = (
                f"{self.base_macs} MACs per sample < {KEY}.min_base_macs={self.min_base_macs:g}: "
                "too small for fewer MACs to save time"
            )
            if trainer.is_global_zero:
                log.info("prune: not pruning this net (%s).", self.skipped_reason)
            return
        if self.final_ratio is None:
            self.final_ratio = self._ratio_for_macs(net, num_classes)
            log.info(
                "prune: channel ratio %.3f targets %.2fx fewer MACs", self.final_ratio, self.macs_reduction
            )
        self.pruner = self._build_pruner(net, self.final_ratio, self.n_steps, num_classes)
        if self._init_channels is None:
            self._capture_pruner_state()
        else:
            self._apply_pruner_state()
        if self.end_epoch >= trainer.max_epochs and trainer.max_epochs > 0 and trainer.is_global_zero:
            log.warning(
                "prune: %s.end_epoch=%d but trainer.max_epochs=%d: the final ratio is not reached, and no "
                "epoch is left to recover after the last prune",
                KEY,
                self.end_epoch,
                trainer.max_epochs,
            )

    def _capture_pruner_state(self) -> None:
        p = self.pruner
        names = {m: n for n, m in self._net.named_modules()}
        self._init_channels = {
            names[m]: (int(p.layer_init_out_ch[m]), int(p.layer_init_in_ch[m]))
            for m in p.layer_init_out_ch
            if m in names
        }
        self._scope_init = {str(k): int(v) for k, v in p._scope_initial_channels.items()}
        self._init_total = int(p.initial_total_channels)

    def _apply_pruner_state(self) -> None:
        """On resume: the pruner was built on the pruned net; give it the original widths (trap 5)."""
        p = self.pruner
        modules = dict(self._net.named_modules())
        for name, (out_ch, in_ch) in self._init_channels.items():
            m = modules.get(name)
            if m is not None and m in p.layer_init_out_ch:
                p.layer_init_out_ch[m], p.layer_init_in_ch[m] = out_ch, in_ch
        p._scope_initial_channels = dict(self._scope_init or {})
        p.initial_total_channels = self._init_total
        p.current_step = self.steps_done

    # ---- the schedule in training -----------------------------------------------------------------
    def prune_epochs(self) -> list[int]:
        return list(range(self.start_epoch, self.end_epoch + 1))

    def _due(self, epoch: int) -> int:
        return max(0, min(self.n_steps, epoch - self.start_epoch + 1))

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        # trap 3: Taylor importance needs gradients, which Lightning zeroes before epoch hooks
        if self.skipped_reason or self.importance != "taylor":
            return
        if self._due(trainer.current_epoch + 1) <= self.steps_done:
            return
        for p in self._net.parameters():
            if p.grad is not None:
                acc = self._grad_acc.get(p)
                g = p.grad.detach().float()
                self._grad_acc[p] = g.clone() if acc is None else acc.add_(g)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.skipped_reason:
            return
        due = self._due(trainer.current_epoch)
        if due <= self.steps_done:
            return
        while self.steps_done < due:
            self._prune_once(trainer, pl_module)
        self._after_prune(trainer)
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

    def _prune_once(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net, pruner = self._net, self.pruner
        modes = _modes(net)
        taylor_ok = True
        if self.importance == "taylor":
            taylor_ok = bool(self._grad_acc)
            if not taylor_ok:  # e.g. resumed right before a prune: no gradients gathered yet
                log.warning("prune: no gradients gathered for Taylor importance; using magnitude this step")
                import torch_pruning as tp

                pruner.importance = tp.importance.MagnitudeImportance(p=2)
            for p, g in self._grad_acc.items():
                p.grad = g.to(p.dtype)
        with torch.no_grad():
            groups = list(pruner.step(interactive=True))
        names = {m: n for n, m in net.named_modules()}
        plan = [(names[g[0].dep.target.module], sorted(int(i) for i in g[0].idxs)) for g in groups]
        # every rank applies rank 0's choice (identical already when weights are in sync; now by construction)
        plan0 = trainer.strategy.broadcast(plan, src=0)
        if [n for n, _ in plan0] != [n for n, _ in plan]:
            raise RuntimeError(f"{KEY}: ranks disagree on the pruning groups: {plan0} vs {plan}")
        for group, (_, idxs) in zip(groups, plan0):
            root = group[0].dep
            final = pruner.DG.get_pruning_group(root.target.module, root.handler, idxs)
            self._prune_group(final, pruner.DG, trainer.optimizers)
        self.steps_done = pruner.current_step
        _restore_modes(modes)  # trap 1
        if self.importance == "taylor":
            for p in net.parameters():
                p.grad = None
            self._grad_acc = {}
            if not taylor_ok:
                pruner.importance = self._importance()

    @staticmethod
    def _prune_group(group: Any, graph: Any, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Prune one group; swap each changed parameter into the optimizers with its state sliced alike."""
        from torch_pruning._helpers import to_plain_idxs

        pending = []  # (module, name, old param, requires_grad, {optimizer: sliced state})
        for dep, idxs in group:
            mod = dep.target.module
            if not isinstance(mod, nn.Module):
                continue
            out = graph.is_out_channel_pruning_fn(dep.handler)
            plain = set(int(i) for i in to_plain_idxs(idxs))
            for pname, p in mod._parameters.items():
                if p is None:
                    continue
                dim = _pruned_dim(mod, pname, out)
                states = {}
                for opt in optimizers:
                    st = opt.state.get(p)
                    if st is None:
                        continue
                    sliced = {}
                    for k, v in st.items():
                        if torch.is_tensor(v) and v.shape == p.shape and dim is not None and dim < v.dim():
                            keep = [i for i in range(v.shape[dim]) if i not in plain]
                            v = v.index_select(dim, torch.tensor(keep, device=v.device))
                        sliced[k] = v
                    states[opt] = sliced
                pending.append((mod, pname, p, p.requires_grad, states))
        group.prune()
        for mod, pname, old, requires_grad, states in pending:
            new = mod._parameters.get(pname)
            if new is None or new is old:
                continue
            new.requires_grad_(requires_grad)  # trap 4: pruned params come back trainable
            for opt in optimizers:  # trap 2: the optimizer must hold the new tensor
                for pg in opt.param_groups:
                    pg["params"] = [new if q is old else q for q in pg["params"]]
                st = opt.state.pop(old, None)
                if st is None:
                    continue
                sliced = states.get(opt, {})
                ok = all(
                    not torch.is_tensor(v) or v.dim() == 0 or v.shape == new.shape for v in sliced.values()
                )
                opt.state[new] = sliced if ok else {}  # a state we could not slice restarts fresh

    def _after_prune(self, trainer: L.Trainer) -> None:
        self.macs, self.params = count_macs_params(self._net, self._example)
        strategy = trainer.strategy
        if trainer.world_size > 1 and hasattr(strategy, "_setup_model"):
            # trap 6: DDP registered hooks on the old parameters; wrap the pruned module anew
            strategy.model = strategy._setup_model(strategy.lightning_module)
            if hasattr(strategy, "_register_ddp_hooks"):
                strategy._register_ddp_hooks()
        if "torch._dynamo" in sys.modules:  # trap 6: new shapes would exhaust the recompile limit
            sys.modules["torch._dynamo"].reset()
        if self.reset_best_after_prune:
            for cb in trainer.checkpoint_callbacks:
                _forget_best(cb, trainer)
            for cb in trainer.early_stopping_callbacks:  # patience restarts: the net must recover first
                cb.wait_count = 0
                cb.best_score = torch.tensor(torch.inf if cb.mode == "min" else -torch.inf)

    # ---- results ----------------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.export_dir is None or not trainer.is_global_zero or self._net is None or self.skipped_reason:
            return
        self.exported = export_net(self._net, self._example, Path(self.export_dir), self.export_program)

    def summary_figures(self) -> dict[str, Any]:
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
        if self.skipped_reason:
            out["prune/skipped"] = self.skipped_reason
        return out


def _pruned_dim(mod: nn.Module, pname: str, out: bool) -> int | None:
    """The tensor dim that an out- or in-channel prune of `mod` slices for parameter `pname`."""
    if isinstance(mod, nn.modules.conv._ConvNd):
        if mod.groups != 1:
            return 0 if pname == "weight" else (0 if out else None)
        if pname == "weight":
            return (1 if out else 0) if mod.transposed else (0 if out else 1)
        return 0 if out else None
    if isinstance(mod, nn.Linear):
        if pname == "weight":
            return 0 if out else 1
        return 0 if out else None
    if isinstance(mod, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm | nn.PReLU):
        return 0
    return None


def _forget_best(cb: Any, trainer: L.Trainer) -> None:
    """Restart a ModelCheckpoint's best tracking: checkpoints of a wider net no longer compete.

    Its tracked top-k files (the wider net's) are deleted, as it would have deleted them once
    beaten; `last.ckpt` stays.
    """
    if not getattr(cb, "monitor", None) or not hasattr(cb, "best_k_models"):
        return
    for path in list(cb.best_k_models):
        if path != getattr(cb, "last_model_path", None):
            trainer.strategy.remove_checkpoint(path)
    cb.best_k_models = {}
    cb.kth_best_model_path = ""
    cb.best_model_score = None
    cb.best_model_path = ""
    inf = torch.tensor(torch.inf)
    cb.kth_value = inf if cb.mode == "min" else -inf


def export_net(net: nn.Module, example: torch.Tensor, out_dir: Path, program: bool = True) -> dict[str, str]:
    """Write the pruned net for inference: `pruned_net.pt` (whole module) and `pruned_net.pt2` (torch.export).

    Load with `torch.load("pruned_net.pt", weights_only=False)` (needs the net's class importable) or
    `torch.export.load("pruned_net.pt2").module()` (needs only torch).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(net).cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    written = {}
    path = out_dir / "pruned_net.pt"
    torch.save(model, path)
    written["module"] = str(path)
    if program:
        try:
            ep = torch.export.export(model, (example.detach().cpu(),))
            path2 = out_dir / "pruned_net.pt2"
            torch.export.save(ep, path2)
            written["program"] = str(path2)
        except Exception as err:  # noqa: BLE001 - the full-module file is still there
            log.warning("prune: torch.export of the pruned net failed (%s); pruned_net.pt is written", err)
    return written


__all__: list[str] = [
    "StructuredPruning",
    "count_macs_params",
    "export_net",
    "restore_structure",
    "schedule_ratios",
    "tensor_shapes",
]
