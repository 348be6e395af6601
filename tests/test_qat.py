"""Quantization-aware training (`+optim=qat`, methods/qat/callback.py): what it promises.

The contract tests (test_contract.py) already run it on every net of the zoo, resume it and
compose it with every other method; these check what QAT itself claims: which layers it
quantises and which it leaves float (saying so), that the fit trains fake-quantised from
`start_epoch`, that the exported int8 model loads with torch alone and agrees with the
fake-quantised one, that a resumed run continues fake-quantised, and that a missing torchao
fails in one line saying how to install it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_cfg, train_in_process
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from wattwise.methods.qat import callback as quantize
from wattwise.train import build
from wattwise.utils.errors import ConfigError

pytest.importorskip("torchao")
from torchao.quantization.qat import FakeQuantizedLinear  # noqa: E402

# The int8 model's test accuracy may differ from the fake-quantised model's by at most this:
# the fake quantiser simulates the same int8 rounding, so only the kernels' arithmetic differs.
INT8_VS_FAKE_QUANT_BOUND = 0.02

RUN = ["trainer.max_epochs=3", "callbacks.qat.start_epoch=1", "++trainer.limit_test_batches=null"]


def _train(tmp_path: Path, overrides: list[str]) -> tuple[dict, Path]:
    return train_in_process(tmp_path, ["+optim=qat", *RUN, *overrides])


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)
        self.norm = nn.BatchNorm1d(4)
        self.gru = nn.GRU(4, 8, batch_first=True)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.odd = nn.Linear(8, 12)
        self.head = nn.Linear(12, 3)


def test_only_linear_layers_are_quantised_and_the_others_are_named_with_why():
    layers, kept = quantize.split_layers(_Mixed(), "per_channel", 32)
    assert layers == ["odd", "head"]
    assert set(kept) == {"conv", "gru", "attn", "attn.out_proj"}  # norms are never quantised: not listed
    assert "nn.Linear only" in kept["conv"] and "attention" in kept["attn.out_proj"]


def test_per_group_scales_leave_layers_whose_width_does_not_divide_in_float():
    layers, kept = quantize.split_layers(_Mixed(), "per_group", 8)
    assert layers == ["odd"]  # head has 12 inputs: not a multiple of 8
    assert kept["head"] == "in_features 12 not a multiple of group_size 8"


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_qat_trains_converts_and_the_exported_int8_model_agrees(tmp_path, net):
    summary, run_dir = _train(tmp_path, [f"model={net}"])
    assert summary["status"] == "completed", summary.get("error")
    assert summary["qat/status"] == "active"
    assert summary["qat/start_epoch"] == 1 and summary["qat/fake_quant_epochs"] == 2
    assert summary["qat/layers_quantised"] >= 1
    if net == "cnn":  # the conv layers stayed float, by name
        assert any("conv" in n or "features" in n for n in summary["qat/layers_float"])
    # int8 weights: the MLP's state dict shrinks (biases and scales stay float, so not a full 4x);
    # the CNN's weights are mostly convolutions, which stay float, so it shrinks only a little
    shrink = 0.6 if net == "mlp" else 1.0
    assert summary["qat/int8_bytes"] < shrink * summary["qat/float_bytes"]
    # test/acc is the fake-quantised net's; the int8 model is compared on the same test set
    assert abs(summary["qat/int8_test_acc"] - summary["test/acc"]) <= INT8_VS_FAKE_QUANT_BOUND
    assert summary["qat/int8_test_J_per_sample"] > 0 and summary["qat/float_test_J_per_sample"] > 0
    # the exported program loads with torch alone and classifies like the in-process int8 model
    program = torch.export.load(run_dir / "int8_net.pt2").module()
    cfg = compose_cfg(tmp_path / "data", [f"model={net}"])
    GlobalHydra.instance().clear()
    dm = build(cfg)["datamodule"]
    dm.prepare_data()
    dm.setup("test")
    correct = n = 0
    with torch.no_grad():
        for x, y in dm.test_dataloader():
            correct += int((program(x).argmax(1) == y).sum())
            n += len(y)
    # the same int8 model on the same test set: the same accuracy (up to kernel-order ties)
    assert abs(correct / n - summary["qat/int8_test_acc"]) <= 0.01
    state = torch.load(run_dir / "int8_state_dict.pt", weights_only=False)
    assert any(type(v).__name__ == "IntxUnpackedToInt8Tensor" for v in state.values())


def test_the_net_trains_fake_quantised_from_start_epoch_and_a_resumed_run_continues_so(tmp_path):
    seen: dict[int, bool] = {}

    import lightning as L

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen[trainer.current_epoch] = any(isinstance(m, FakeQuantizedLinear) for m in pl_module.modules())

    def fit(path: Path, overrides: list[str]) -> Path:
        cfg = compose_cfg(path, ["+optim=qat", "callbacks.qat.start_epoch=1", *overrides])
        try:
            parts = build(cfg)
        finally:
            GlobalHydra.instance().clear()
        parts["trainer"].callbacks.append(Spy())
        parts["trainer"].fit(parts["module"], datamodule=parts["datamodule"], ckpt_path=cfg.get("ckpt_path"))
        return Path(cfg.paths.output_dir)

    first = fit(tmp_path / "a", ["trainer.max_epochs=2", "callbacks.model_checkpoint.monitor=null"])
    assert seen == {0: False, 1: True}
    seen.clear()
    fit(tmp_path / "b", ["trainer.max_epochs=3", f"ckpt_path={first}/checkpoints/last.ckpt"])
    assert seen == {2: True}  # the resumed fit is fake-quantised from its first step


def test_without_torchao_the_option_fails_in_one_line_saying_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(quantize, "torchao_available", lambda: False)
    cfg = compose_cfg(tmp_path, ["+optim=qat"])
    try:
        parts = build(cfg)
    finally:
        GlobalHydra.instance().clear()
    with pytest.raises(ConfigError) as err:
        parts["trainer"].fit(parts["module"], datamodule=parts["datamodule"])
    message = str(err.value)
    assert "\n" not in message and "pip install -e '.[quant]'" in message


def test_a_run_that_ends_before_start_epoch_still_gets_an_int8_model(tmp_path):
    summary, run_dir = _train(tmp_path, ["trainer.max_epochs=1", "callbacks.qat.start_epoch=5"])
    assert summary["qat/fake_quant_epochs"] == 0 and summary["qat/start_epoch"] is None
    assert (run_dir / "int8_state_dict.pt").is_file()
    assert abs(summary["qat/int8_test_acc"] - summary["qat/float_test_acc"]) <= 0.05


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("callbacks.qat.start_epoch=-1", "callbacks.qat.start_epoch"),
        ("callbacks.qat.granularity=per_tensor", "callbacks.qat.granularity"),
        ("callbacks.qat.group_size=0", "callbacks.qat.group_size"),
        ("callbacks.qat.compare_batches=0", "callbacks.qat.compare_batches"),
    ],
)
def test_bad_settings_fail_in_one_line_naming_the_key(tmp_path, setting, key):
    cfg = compose_cfg(tmp_path, ["+optim=qat", setting])
    try:
        with pytest.raises(ConfigError) as err:
            build(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_the_tested_and_exported_checkpoint_trained_fake_quantised(tmp_path):
    """Fake quantisation restarts best-checkpoint tracking: a float epoch never wins `best`, and
    the test pass's restore of that checkpoint leaves the fit's own QAT record as it was."""
    summary, run_dir = _train(tmp_path, ["callbacks.qat.start_epoch=2"])
    assert summary["status"] == "completed", summary.get("error")
    kept = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch*.ckpt"))
    assert kept and all(int(name[5:8]) >= 2 for name in kept), kept  # only fake-quantised epochs
    assert summary["qat/fake_quant_epochs"] == 1 and summary["qat/start_epoch"] == 2
