"""`+optim=amp` (precision for the hardware, TF32, channels_last, fp16 overflow) and `+optim=green`."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_cfg
from lightning.pytorch.plugins import MixedPrecision
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from wattwise.methods import registry
from wattwise.methods.amp import callback as precision
from wattwise.methods.amp.callback import (
    Amp,
    NonFiniteLossError,
    auto_precision,
    choose_precision,
    tf32_capable,
)
from wattwise.models import MLP, ClassifierModule
from wattwise.train import build, train
from wattwise.utils.errors import ConfigError


def _summary(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())


# ---- the choice itself (pure) --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device_type", "capability", "bf16", "expected"),
    [
        ("cpu", None, True, "bf16-mixed"),  # AVX512-BF16 / AMX
        ("cpu", None, False, "32-true"),  # AVX2 only: bf16 would be emulated, slower
        ("cuda", (9, 0), True, "bf16-mixed"),  # Hopper
        ("cuda", (8, 0), True, "bf16-mixed"),  # Ampere A100
        ("cuda", (8, 6), True, "bf16-mixed"),  # Ampere consumer
        ("cuda", (7, 5), False, "16-mixed"),  # Turing T4: fp16 tensor cores, no bf16
        ("cuda", (7, 0), False, "16-mixed"),  # Volta V100
        ("cuda", (7, 0), True, "16-mixed"),  # emulated bf16 on Volta must not win
        ("cuda", (6, 1), False, "32-true"),  # Pascal: no tensor cores
        ("cuda", None, False, "32-true"),
    ],
)
def test_choose_precision(device_type, capability, bf16, expected):
    assert choose_precision(device_type, capability, bf16) == expected


def test_tf32_only_from_ampere():
    assert tf32_capable((8, 0)) and tf32_capable((9, 0))
    assert not tf32_capable((7, 5)) and not tf32_capable(None)


@pytest.mark.parametrize(("native_bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_on_a_cpu_and_explicit_choices(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: native_bf16)  # pinned, not the host's
    assert auto_precision("auto", "cpu") == expected
    assert auto_precision("16-mixed", "cpu") == "16-mixed"  # an explicit choice is passed through
    with pytest.raises(ValueError, match="callbacks.amp.precision"):
        auto_precision("fp8", "cpu")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"precision": "fp8"}, "callbacks.amp.precision"), ({"max_nonfinite_steps": -1}, "max_nonfinite_steps")],
)
def test_bad_settings_fail_fast(kwargs, key):
    with pytest.raises(ValueError, match=key):
        Amp(**kwargs)


def test_bad_setting_from_config_is_a_config_error(make_cfg):
    cfg = make_cfg("+optim=amp", "callbacks.amp.max_nonfinite_steps=-3")
    with pytest.raises(ConfigError, match="callbacks.amp.max_nonfinite_steps must be >= 0, got -3"):
        train(cfg)


def test_trainer_precision_beside_amp_is_refused(make_cfg):
    cfg = make_cfg("+optim=amp", "trainer.precision=bf16-mixed", "callbacks.amp.precision=32-true")
    with pytest.raises(ConfigError, match="trainer.precision='bf16-mixed' conflicts with \\+optim=amp"):
        build(cfg)


# ---- in a real fit ------------------------------------------------------------------------------
@pytest.mark.parametrize(("native_bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_amp_on_a_conv_net_sets_precision_and_channels_last(make_cfg, monkeypatch, native_bf16, expected):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: native_bf16)  # pinned, not the host's
    cfg = make_cfg("+optim=amp", "model=cnn", "trainer.accelerator=cpu")
    parts = build(cfg)
    trainer, module = parts["trainer"], parts["module"]
    assert trainer.precision == expected
    trainer.fit(module, datamodule=parts["datamodule"])
    conv = _conv(module)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()  # really NHWC
    figures = parts["callbacks"]["amp"].summary_figures()
    assert figures == {
        "amp/status": "active",
        "amp/precision": expected,
        "amp/measured": "not measured: 3 batches per epoch, 10 needed" if native_bf16 else None,
        "amp/measure_unit": None,
        "amp/tf32": False,  # TF32 exists on Ampere and newer GPUs only
        "amp/channels_last": True,
        "amp/nonfinite_steps": 0,
        "amp/fp8": "not tried: no FP8 on cpu (FP8 tensor cores are CUDA-only)"
        if native_bf16
        else "not tried: the run trains in 32-true, FP8 is tried against bf16-mixed",
    }


def _conv(module: torch.nn.Module) -> torch.nn.Conv2d:
    """A conv with several input channels (for one input channel NCHW and NHWC coincide)."""
    return next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)


def test_each_part_can_be_switched_off(make_cfg):
    parts = build(make_cfg("+optim=amp", "model=cnn", "callbacks.amp.channels_last=false"))
    parts["trainer"].fit(parts["module"], datamodule=parts["datamodule"])
    assert _conv(parts["module"]).weight.is_contiguous()
    assert parts["callbacks"]["amp"].summary_figures()["amp/channels_last"] is False
    # A forced precision reaches the Trainer, whatever the hardware.
    for forced in ("bf16-mixed", "32-true"):
        trainer = build(make_cfg("+optim=amp", f"callbacks.amp.precision={forced}"))["trainer"]
        assert trainer.precision == forced


def _fp16_fit(init_scale: float, steps: int = 4) -> Amp:
    """fp16 autocast with a GradScaler on the CPU (Lightning would turn a plain `16-mixed` into bf16)."""
    torch.manual_seed(0)
    cb = Amp(precision="16-mixed")
    data = TensorDataset(torch.randn(16 * steps, 1, 8, 8), torch.randint(0, 10, (16 * steps,)))
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)],
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(ClassifierModule(MLP((1, 8, 8), 10), 10), DataLoader(data, batch_size=16))
    return cb


def test_fp16_overflow_steps_are_counted():
    # A scale of 2**100 overflows fp16 gradients: the scaler skips and halves it on every step.
    overflowing = _fp16_fit(init_scale=2.0**100, steps=4)
    assert overflowing.summary_figures()["amp/skipped_steps"] == 4
    # A sane scale: nothing skipped.
    assert _fp16_fit(init_scale=1.0, steps=4).summary_figures()["amp/skipped_steps"] == 0


@pytest.mark.parametrize("counting", ["immediate", "device-side"])
def test_a_diverged_run_stops_with_a_clear_message(make_cfg, monkeypatch, counting):
    if counting == "device-side":  # the GPU path: counters stay on the device, read every N steps
        monkeypatch.setattr(Amp, "immediate_devices", ())
    cfg = make_cfg(
        "+optim=amp",
        "model.optimizer.lr=1e30",  # Adam at this rate turns the weights to inf/NaN within two steps
        "callbacks.amp.max_nonfinite_steps=3",
        "trainer.limit_train_batches=12",
    )
    with pytest.raises(NonFiniteLossError, match=r"NaN/inf for \d+ consecutive steps"):
        train(cfg)
    s = _summary(cfg)
    assert s["status"] == "failed"
    assert "NonFiniteLossError" in s["error"] and "max_nonfinite_steps=3" in s["error"]
    assert s["amp/nonfinite_steps"] >= 3
    assert s["global_step"] < 12  # stopped early, not after the whole epoch


# ---- green --------------------------------------------------------------------------------------
def _leaves(node, prefix=""):
    """{dotted.path: value} of a config, interpolations kept as written."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def test_green_holds_every_method_that_joins_it(tmp_path):
    """green is built from the registry: each member's settings unchanged, except what the member
    declares for green (its `recipes["green"]`) and `if_not_applicable: skip`."""
    base = _leaves(OmegaConf.to_container(compose_cfg(tmp_path, [])))
    green = _leaves(OmegaConf.to_container(compose_cfg(tmp_path, ["+optim=green"])))
    members = registry.recipe_members("green")
    assert {"amp", "early_stop", "prune", "power"} <= set(members)
    for name in members:
        alone = _leaves(OmegaConf.to_container(compose_cfg(tmp_path, [f"+optim={name}"])))
        changed = {k: v for k, v in alone.items() if k not in base or base[k] != v}
        tuned = {
            f"callbacks.{name}.{k}": v for k, v in registry.method_classes()[name].recipes["green"].items()
        }
        tuned[f"callbacks.{name}.if_not_applicable"] = "skip"
        for key, value in changed.items():
            assert key in green and green[key] == tuned.get(key, value), f"green changed {name}'s {key}"
    assert green["recipe"] == "green"


def test_green_trains(make_cfg):
    cfg = make_cfg("+optim=green", "model=cnn")  # power runs dry in tests (conftest), also on a GPU
    train(cfg)
    s = _summary(cfg)
    assert s["status"] == "completed" and s["optim"] == ["green"]
    assert s["amp/channels_last"] is True and "energy/total_J" in s


# ---- measuring the candidates at fit start ------------------------------------------------------
def test_auto_measures_both_precisions_and_keeps_the_cheaper(make_cfg, monkeypatch):
    """bf16 pinned as native: the table offers bf16-mixed, the fit measures it against 32-true and keeps
    whichever cost less per step (no expectation about which: the mechanism is what is tested)."""
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    cfg = make_cfg("+optim=amp", "model=cnn", "trainer.accelerator=cpu", "trainer.limit_train_batches=12")
    parts = build(cfg)
    assert parts["trainer"].precision == "bf16-mixed"  # the hardware table's offer, before measuring
    parts["trainer"].fit(parts["module"], datamodule=parts["datamodule"])
    amp = parts["callbacks"]["amp"]
    assert set(amp.measured) == {"bf16-mixed", "32-true"} and all(v > 0 for v in amp.measured.values())
    cheaper = min(amp.measured, key=amp.measured.get)
    assert amp.chosen_precision == cheaper == str(parts["trainer"].precision)
    figures = amp.summary_figures()
    assert figures["amp/precision"] == cheaper and figures["amp/measure_unit"] == "J/step"
    assert amp.state_dict()["precision"] == cheaper  # a resumed run keeps it


def test_a_resumed_run_keeps_the_measured_choice(make_cfg, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    parts = build(make_cfg("+optim=amp", "trainer.accelerator=cpu"))
    amp = parts["callbacks"]["amp"]
    amp.load_state_dict({"precision": "32-true", "measured": {"bf16-mixed": 2.0, "32-true": 1.0}})
    parts["trainer"].fit(parts["module"], datamodule=parts["datamodule"])
    assert str(parts["trainer"].precision) == "32-true" and amp.chosen_precision == "32-true"


def test_a_short_epoch_or_measure_steps_0_keeps_the_table(make_cfg, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    parts = build(make_cfg("+optim=amp", "trainer.accelerator=cpu"))  # 3 batches: too few to measure
    parts["trainer"].fit(parts["module"], datamodule=parts["datamodule"])
    amp = parts["callbacks"]["amp"]
    assert amp.chosen_precision == "bf16-mixed" and amp.measured == {}
    assert "not measured: 3 batches per epoch" in amp.summary_figures()["amp/measured"]
    parts = build(make_cfg("+optim=amp", "trainer.accelerator=cpu", "callbacks.amp.measure_steps=0"))
    assert parts["callbacks"]["amp"].summary_figures()["amp/measured"] is None
