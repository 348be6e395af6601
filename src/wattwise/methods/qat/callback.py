"""Quantization-aware training to an int8 model with torchao: `+optim=qat`.

Method card: README.md beside this file. In short: from `start_epoch` on, the net's `nn.Linear` layers train
fake-quantised (int8 weights per output channel, int8 dynamic activations per token, the
quantisation simulated in float so gradients flow); at the end a copy is converted to a real
int8 model, exported beside the run (`int8_net.pt2`, a `torch.export` program, and
`int8_state_dict.pt`), and compared with the float model on the test set: accuracy, size and
inference energy per sample, each pass measured by the run's energy monitor.

torchao is an optional dependency (`pip install -e '.[quant]'`, which `make install` does);
torchao's int8 QAT covers `nn.Linear` only, so convolutions, recurrent layers, embeddings and
attention projections stay float and are named in one line.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from wattwise.compat import torchao as compat_torchao
from wattwise.compat.torchao import INSTALL_HINT
from wattwise.methods.base import STATUS_ACTIVE, EnergyMethod, StructureChange, announce_structure_change
from wattwise.methods.qat.layers import (
    convert_to_int8,
    insert_fake_quant,
    split_layers,
    state_bytes,
    strip_fake_quant,
    trial_fake_quant,
)
from wattwise.methods.shared.settings import MethodSettings, boolean, integer, one_of, setting
from wattwise.methods.shared.target import target_net
from wattwise.utils.atomic_write import save_atomically

log = logging.getLogger(__name__)

KEY = "callbacks.qat"
GRANULARITIES = ("per_channel", "per_group")

# States of the net, in order: float, fake-quantised while training, converted copies at the end.
STATUS_WAITING = "waiting"  # before start_epoch
STATUS_FAKE_QUANT = "fake_quant"


def torchao_available() -> bool:
    return compat_torchao.available()


@dataclass(frozen=True)
class QatSettings(MethodSettings):
    """`callbacks.qat.*`: the keys, their defaults and their checks (see Qat's Args).

    `granularity` and `compare_batches` keep the wording their messages had before the shared
    validators (`must be one of ('per_channel', 'per_group')`, `an integer >= 1 or null`).
    """

    start_epoch: int = setting(1, integer(low=0), doc="first epoch (0-based) trained fake-quantised")
    granularity: str = setting(
        "per_channel",
        dataclasses.replace(one_of(*GRANULARITIES), expects=f"one of {GRANULARITIES}"),
        doc="int8 weight scales per output row, or per group_size inputs",
    )
    group_size: int = setting(32, integer(low=1), doc="inputs per scale with per_group")
    export_dir: str | None = setting(None, optional=True, doc="where the int8 model goes at fit end")
    export_program: bool = setting(True, boolean(), doc="also write int8_net.pt2 (torch.export)")
    compare_batches: int | None = setting(
        None,
        dataclasses.replace(integer(low=1), expects="an integer >= 1 or null"),
        optional=True,
        doc="test batches the int8 and float models are compared on (null: all)",
    )


class Qat(EnergyMethod):
    """Fake-quantised training from `start_epoch`, an int8 model at the end (torchao).

    Args (config keys `callbacks.qat.*`, checked by `QatSettings`):
        start_epoch: first epoch (0-based) trained fake-quantised; earlier epochs train in
            float. A run that ends before it gets a post-training-quantised int8 model (said so).
        granularity: int8 weight scales `per_channel` (one per output row; any layer width) or
            `per_group` (one per `group_size` inputs; layers whose width is not a multiple stay float).
        group_size: inputs per scale with `per_group` (> 0).
        export_dir: where `int8_net.pt2` and `int8_state_dict.pt` go at fit end; null: nowhere.
        export_program: also write `int8_net.pt2` (a torch.export program; tracing takes seconds
            for recurrent nets); false: the state dict only.
        compare_batches: test batches the int8 and float models are compared on (null: all).
        if_not_applicable: `fail` or `skip` (see methods/base.py): no Linear layer, or no torchao.
    """

    name = "qat"
    figure_prefix = "qat/"
    summary_keys = ("qat/layers_quantised", "qat/float_bytes", "qat/int8_bytes", "qat/fake_quant_epochs")
    runs_after = ("prune",)  # prune at an epoch start first, then quantise the smaller net

    def __init__(
        self,
        start_epoch: int = 1,
        granularity: str = "per_channel",
        group_size: int = 32,
        export_dir: str | None = None,
        export_program: bool = True,
        compare_batches: int | None = None,
        if_not_applicable: str = "fail",
    ) -> None:
        super().__init__(if_not_applicable)
        self.settings = s = QatSettings.build(
            KEY, **{k: v for k, v in locals().items() if k in QatSettings.__dataclass_fields__}
        )
        self.start_epoch, self.granularity, self.group_size = s.start_epoch, s.granularity, s.group_size
        self.export_dir, self.export_program = s.export_dir, s.export_program
        self.compare_batches = s.compare_batches
        self.prepared = False
        self.prepared_at: int | None = None
        self.fake_quant_epochs = 0
        self.layers: list[str] = []
        self.kept_float: dict[str, str] = {}
        self.figures: dict[str, Any] = {}
        self.exported: dict[str, str] = {}
        self._stage: str | None = None

    # ---- fake quantisation --------------------------------------------------------------------
    def _prepare(self, pl_module: L.LightningModule, epoch: int) -> None:
        insert_fake_quant(target_net(pl_module), self.layers, self.granularity, self.group_size)
        self.prepared = True
        if self.prepared_at is None:
            self.prepared_at = epoch
            log.info(
                "qat: fake-quantised int8 training from epoch %d on %d Linear layer(s)",
                epoch,
                len(self.layers),
            )

    def _convert(self, net: nn.Module) -> nn.Module:
        """An int8 copy of `net` (fake-quantised or float), torchao's converted Linear layers."""
        return convert_to_int8(net, self.layers, self.granularity, self.group_size)

    def _trial(self, trainer: L.Trainer, net: nn.Module) -> str | None:
        """Fake-quantise a copy and run a real batch through it (none found: nothing to check)."""
        from wattwise.methods.shared.inputs import real_inputs

        x = real_inputs(getattr(trainer, "datamodule", None))
        if x is None:
            return None
        ref = next(iter(net.parameters()), None)
        x = x.to(ref.device) if ref is not None else x
        return trial_fake_quant(net, self.layers, self.granularity, self.group_size, x)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._stage = stage  # `test` restores callback states too: only a fit's restore counts
        if stage != "fit" or not self.active:
            return
        if not torchao_available():
            self.step_aside(INSTALL_HINT, trainer)
            return
        net = target_net(pl_module)  # methods/shared/target.py: the override, `net`, or the module
        self.layers, self.kept_float = split_layers(net, self.granularity, self.group_size)
        if not self.layers:
            self.step_aside(
                "the net has no nn.Linear layer (torchao's int8 QAT handles Linear only)", trainer
            )
            return
        if not self.prepared and (why := self._trial(trainer, net)) is not None:
            self.step_aside(why, trainer)
            return
        self.status = STATUS_WAITING if not self.prepared else STATUS_FAKE_QUANT
        if self.kept_float and trainer.is_global_zero:
            text = ", ".join(f"{n} ({why})" for n, why in self.kept_float.items())
            log.info("qat: left in float: %s", text)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active and self.prepared and self.layers:  # resumed mid-QAT: fake-quantise again
            self._prepare(pl_module, trainer.current_epoch)
            self.status = STATUS_FAKE_QUANT

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or not self.layers:
            return
        if not self.prepared and trainer.current_epoch >= self.start_epoch:
            self._prepare(pl_module, trainer.current_epoch)
            self.status = STATUS_FAKE_QUANT
            # The net now computes something else: a float checkpoint must not win `best` (it
            # would be exported as int8 without ever having trained fake-quantised), early
            # stopping judges the quantised net afresh and the power tuner profiles it again.
            announce_structure_change(trainer, pl_module, StructureChange(self.name, trainer.current_epoch))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active and self.prepared:
            self.fake_quant_epochs += 1

    def on_structure_change(
        self, trainer: L.Trainer, pl_module: L.LightningModule, change: StructureChange
    ) -> None:
        """Pruned: the layer list is re-read (fake quantisers hold no shape-dependent state)."""
        if self.active:
            self.layers, self.kept_float = split_layers(
                target_net(pl_module), self.granularity, self.group_size
            )

    # ---- the int8 model -------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or not self.layers:
            return
        if not self.prepared:
            log.warning(
                "qat: the fit ended before start_epoch %d: the int8 model is post-training quantised "
                "(no fake-quantised epochs)",
                self.start_epoch,
            )
        net = self._best_net(trainer, pl_module)
        float_net = strip_fake_quant(net)
        int8_net = self._convert(net)
        self.figures["qat/float_bytes"] = state_bytes(float_net)
        self.figures["qat/int8_bytes"] = state_bytes(int8_net)
        if self.export_dir and trainer.is_global_zero:
            self.exported = self._export(int8_net, trainer, Path(self.export_dir))
        self.status = STATUS_ACTIVE

    def _best_net(self, trainer: L.Trainer, pl_module: L.LightningModule) -> nn.Module:
        """The net with the best checkpoint's weights (what `test` uses), else as it ended."""
        from wattwise.methods.shared.export import net_from_checkpoint, read_checkpoint, submodule_prefix

        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
        prefix = submodule_prefix(pl_module, target_net(pl_module))
        if not best or not Path(best).is_file() or prefix is None:
            return target_net(pl_module)
        checkpoint = read_checkpoint(best, "best checkpoint")  # weights only
        return net_from_checkpoint(target_net(pl_module), checkpoint, prefix)

    def _example(self, trainer: L.Trainer) -> torch.Tensor | None:
        """Real samples to trace the program with, read as the pruner reads them (global RNG untouched)."""
        from wattwise.methods.shared.inputs import real_inputs

        x = real_inputs(getattr(trainer, "datamodule", None))
        if x is None:  # no program then; the state dict is still written
            log.warning("qat: no int8_net.pt2 (the datamodule yields no input batch to trace it with)")
        return x

    def _export(self, int8_net: nn.Module, trainer: L.Trainer, out_dir: Path) -> dict[str, str]:
        out_dir.mkdir(parents=True, exist_ok=True)
        written: dict[str, str] = {}
        state_path = out_dir / "int8_state_dict.pt"
        save_atomically(int8_net.cpu().state_dict(), state_path, "the int8 state dict")
        written["state_dict"] = str(state_path)
        example = self._example(trainer) if self.export_program else None
        if example is not None:
            try:
                from wattwise.methods.shared.export import _export_program

                with torch.no_grad():
                    program, _ = _export_program(int8_net.cpu(), example.cpu())
                path = out_dir / "int8_net.pt2"
                torch.export.save(program, path)
                written["program"] = str(path)
            except Exception as err:  # noqa: BLE001 - the state dict is the fallback, said once
                log.warning("qat: no int8_net.pt2 (torch.export failed: %s)", str(err).splitlines()[0])
        log.info("qat: int8 model written: %s", ", ".join(written.values()))
        return written

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Float and int8 copies of the tested net, each over the test set, each pass measured."""
        if not self.active or not self.layers or not trainer.is_global_zero:
            return
        loaders = trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        if loader is None:
            return
        net = target_net(pl_module)
        float_net = strip_fake_quant(net)
        int8_net = self._convert(net)
        for label, model in (("float", float_net), ("int8", int8_net)):
            acc, n, joules, seconds = self._evaluate(model, loader, trainer, pl_module.device)
            self.figures[f"qat/{label}_test_acc"] = acc
            self.figures[f"qat/{label}_test_s_per_sample"] = seconds / n if n else None
            self.figures[f"qat/{label}_test_J_per_sample"] = (
                joules / n if (joules is not None and n) else None
            )

    def _evaluate(
        self, model: nn.Module, loader: Any, trainer: L.Trainer, device: torch.device
    ) -> tuple[float | None, int, float | None, float]:
        meter = getattr(self.energy_monitor, "meter", None)
        meter = meter if meter is not None and meter.source != "off" else None
        model = model.to(device).eval()
        correct = n = 0
        key = "wattwise.qat.compare"
        if meter is not None:
            meter.begin(key)
        start = time.perf_counter()
        with torch.no_grad():
            for i, (x, y) in enumerate(loader):
                if self.compare_batches is not None and i >= self.compare_batches:
                    break
                pred = model(x.to(device)).argmax(dim=1)
                correct += int((pred == y.to(device)).sum())
                n += int(y.numel())
        seconds = time.perf_counter() - start
        joules = meter.end(key).total_J if meter is not None else None
        return (correct / n if n else None), n, joules, seconds

    # ---- results and state --------------------------------------------------------------------
    def method_figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "qat/layers_quantised": len(self.layers),
            "qat/layers_float": sorted(self.kept_float),
            "qat/start_epoch": self.prepared_at,
            "qat/fake_quant_epochs": self.fake_quant_epochs,
            "qat/float_bytes": self.figures.get("qat/float_bytes"),
            "qat/int8_bytes": self.figures.get("qat/int8_bytes"),
        }
        out.update({k: v for k, v in self.figures.items() if k not in out})
        if self.exported:
            out["qat/exported"] = dict(self.exported)
        return out

    @classmethod
    def report_rows(cls, summary: Any) -> list[tuple[str, str]]:
        rows = super().report_rows(summary)
        fb, ib = summary.get("qat/float_bytes"), summary.get("qat/int8_bytes")
        if fb and ib:
            rows.append(
                ("int8 model (qat)", f"{ib / 1e3:.1f} kB vs {fb / 1e3:.1f} kB float ({fb / ib:.2f}x smaller)")
            )
        fa, ia = summary.get("qat/float_test_acc"), summary.get("qat/int8_test_acc")
        if fa is not None and ia is not None:
            rows.append(("test acc int8 / float (qat)", f"{100 * ia:.2f} % / {100 * fa:.2f} %"))
        fj, ij = summary.get("qat/float_test_J_per_sample"), summary.get("qat/int8_test_J_per_sample")
        if fj and ij:
            rows.append(("inference J/sample int8 / float", f"{ij * 1e3:.3g} / {fj * 1e3:.3g} mJ"))
        return rows

    def state_dict(self) -> dict[str, Any]:
        """Whether the net is fake-quantised, so a resumed run re-inserts the quantisers first."""
        return {
            "prepared": self.prepared,
            "prepared_at": self.prepared_at,
            "fake_quant_epochs": self.fake_quant_epochs,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._stage not in (None, "fit"):  # trainer.test(ckpt_path=best): keep this fit's record
            return
        self.prepared = bool(state_dict.get("prepared", False))
        self.prepared_at = state_dict.get("prepared_at")
        self.fake_quant_epochs = int(state_dict.get("fake_quant_epochs", 0))
