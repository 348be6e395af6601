"""The FP8 gate (optim/fp8.py) and amp's FP8 trial: described hardware, never the host's.

FP8 needs a CUDA card with compute capability >= 8.9; this machine has none, so the gate is
tested on described devices, the layer plan on described shapes (meta tensors: no memory), and
amp's trial wiring with a stand-in for torchao's Float8Linear that runs on the CPU (the trial,
the measurement, the decision and the swap back are the real code; only the FP8 kernel is not).
"""

from __future__ import annotations

import pytest
import torch
from conftest import compose_cfg
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from wattwise.methods.amp import callback as precision
from wattwise.methods.amp import fp8
from wattwise.train import build

pytest.importorskip("torchao")


@pytest.mark.parametrize(
    ("device", "capability", "supported"),
    [
        ("cpu", None, False),
        ("mps", None, False),
        ("cuda", None, False),
        ("cuda", (7, 0), False),  # V100
        ("cuda", (8, 0), False),  # A100: bf16, no FP8
        ("cuda", (8, 6), False),  # RTX 30xx
        ("cuda", (8, 9), True),  # Ada (L4, L40, RTX 40xx)
        ("cuda", (9, 0), True),  # H100/H200
        ("cuda", (10, 0), True),  # Blackwell
    ],
)
def test_fp8_only_on_cards_with_fp8_tensor_cores(device, capability, supported):
    ok, why = fp8.fp8_support(device, capability)
    assert ok is supported and why


class _Shapes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with torch.device("meta"):
            self.big = nn.Linear(4096, 8192)  # K 4096, N 8192: gains by torchao's tensorwise table
            self.odd = nn.Linear(100, 4096)  # 100 inputs: not a multiple of 16
            self.small = nn.Linear(256, 256)  # multiples of 16, too small to gain
            self.attn = nn.MultiheadAttention(4096, 8)
            self.conv = nn.Conv2d(3, 16, 3)  # not a Linear: never in the plan


def test_the_layer_plan_follows_torchao_shape_guidance_and_says_why():
    plan = fp8.plan_fp8_layers(_Shapes(), "tensorwise")
    assert plan.fp8 == ["big"]
    assert set(plan.kept) == {"odd", "small", "attn.out_proj"}
    assert "multiples of 16" in plan.kept["odd"]
    assert "too small" in plan.kept["small"]
    assert "attention" in plan.kept["attn.out_proj"]
    assert "FP8: big" in plan.describe()


def test_rowwise_has_its_own_thresholds():
    plan = fp8.plan_fp8_layers(_Shapes(), "rowwise")  # rowwise: N > 2048 and K > 1024, ...
    assert plan.fp8 == ["big"] and "too small" in plan.kept["small"]


def test_swap_to_torchao_float8_and_back_keeps_the_parameters():
    from torchao.float8.float8_linear import Float8Linear

    net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 16))
    weight = net[0].weight
    originals = fp8.swap_to_fp8(net, ["0"])
    assert isinstance(net[0], Float8Linear) and net[0].weight is weight
    assert not isinstance(net[2], Float8Linear)
    fp8.swap_back(net, originals)
    assert type(net[0]) is nn.Linear and net[0].weight is weight


class _StandIn(nn.Linear):
    """Runs on the CPU where torchao's Float8Linear needs a card; marks the layers that were swapped."""


def _fake_swap(net, names, recipe="tensorwise"):
    originals = {}
    for name in names:
        old = net.get_submodule(name)
        new = _StandIn(old.in_features, old.out_features, bias=old.bias is not None, device="meta")
        new.weight, new.bias = old.weight, old.bias
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, new)
        originals[name] = old
    return originals


def _fit_with_amp(tmp_path, monkeypatch, device_said, layers_gain: bool):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)  # bf16-mixed chosen on the CPU
    monkeypatch.setattr(precision, "fp8_device", lambda device: device_said)
    monkeypatch.setattr(fp8, "swap_to_fp8", _fake_swap)
    if layers_gain:  # the test MLP is far below torchao's size thresholds: say its Linears gain
        real_plan = fp8.plan_fp8_layers

        def plan(net, recipe="tensorwise"):
            names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
            return fp8.Fp8Plan(fp8=names, kept={}) if names else real_plan(net, recipe)

        monkeypatch.setattr(fp8, "plan_fp8_layers", plan)
    cfg = compose_cfg(
        tmp_path,
        [
            "+optim=amp",
            "trainer.accelerator=cpu",
            "callbacks.amp.measure_steps=1",
            "++trainer.limit_train_batches=8",
        ],
    )
    try:
        parts = build(cfg)
    finally:
        GlobalHydra.instance().clear()
    parts["trainer"].fit(parts["module"], datamodule=parts["datamodule"])
    return parts["callbacks"]["amp"], parts["module"]


def test_amp_measures_fp8_against_bf16_on_an_fp8_card_and_keeps_the_cheaper(tmp_path, monkeypatch):
    amp, module = _fit_with_amp(tmp_path, monkeypatch, ("cuda", (9, 0)), layers_gain=True)
    assert set(amp.measured) == {precision.FP8, "bf16-mixed", "32-true"}
    cheapest = min(amp.measured, key=amp.measured.get)
    assert amp.chosen_precision == cheapest
    swapped = any(isinstance(m, _StandIn) for m in module.modules())
    assert swapped is (cheapest == precision.FP8)  # rejected FP8 layers were swapped back
    figure = amp.method_figures()["amp/fp8"]
    assert isinstance(figure, list) if cheapest == precision.FP8 else figure.startswith("FP8: ")


@pytest.mark.parametrize(
    ("device_said", "note"),
    [(("cpu", None), "no FP8 on cpu"), (("cuda", (8, 0)), "no FP8 tensor cores")],
)
def test_amp_never_tries_fp8_on_a_cpu_or_a_card_without_it(tmp_path, monkeypatch, device_said, note):
    amp, module = _fit_with_amp(tmp_path, monkeypatch, device_said, layers_gain=True)
    assert precision.FP8 not in amp.measured and amp.chosen_precision != precision.FP8
    assert note in amp.method_figures()["amp/fp8"]
    assert not any(isinstance(m, _StandIn) for m in module.modules())


def test_amp_does_not_try_fp8_where_no_layer_gains(tmp_path, monkeypatch):
    amp, _ = _fit_with_amp(tmp_path, monkeypatch, ("cuda", (9, 0)), layers_gain=False)
    assert precision.FP8 not in amp.measured
    assert "too small to gain" in amp.method_figures()["amp/fp8"]
