"""`+optim=amp` (precision for the hardware, TF32, channels_last, fp16 overflow) and `+optim=green`."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONF_DIR, compose_cfg
from lightning.pytorch.plugins import MixedPrecision
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from wattwise.models import MLP, ClassifierModule
from wattwise.optim.precision import (
    AutoMixedPrecision,
    NonFiniteLossError,
    auto_precision,
    choose_precision,
    cpu_bf16_supported,
    tf32_capable,
)
from wattwise.train import build, train


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


def test_auto_precision_on_this_cpu_and_explicit_choices():
    expected = "bf16-mixed" if cpu_bf16_supported() else "32-true"
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
        AutoMixedPrecision(**kwargs)


def test_bad_setting_from_config_is_a_one_line_error(make_cfg, capsys):
    cfg = make_cfg("+optim=amp", "callbacks.amp.max_nonfinite_steps=-3")
    with pytest.raises(SystemExit) as exc:
        train(cfg)
    assert exc.value.code == 2
    assert "callbacks.amp.max_nonfinite_steps must be >= 0, got -3" in capsys.readouterr().err


# ---- in a real fit ------------------------------------------------------------------------------
def test_amp_on_a_conv_net_sets_precision_and_channels_last(make_cfg):
    cfg = make_cfg("+optim=amp", "model=cnn")
    parts = build(cfg)
    trainer, module = parts["trainer"], parts["module"]
    on_gpu = torch.cuda.is_available()  # trainer.accelerator=auto: the GPU where there is one
    capability = torch.cuda.get_device_capability() if on_gpu else None
    if on_gpu:
        expected = "bf16-mixed" if capability >= (8, 0) else "16-mixed" if capability >= (7, 0) else "32-true"
    else:
        expected = "bf16-mixed" if cpu_bf16_supported() else "32-true"
    assert trainer.precision == expected
    trainer.fit(module, datamodule=parts["datamodule"])
    conv = _conv(module)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()  # really NHWC
    figures = parts["callbacks"]["amp"].summary_figures()
    assert figures == {
        "amp/precision": expected,
        "amp/tf32": bool(on_gpu and capability >= (8, 0)),  # TF32 exists on Ampere and newer GPUs only
        "amp/channels_last": True,
        "amp/nonfinite_steps": 0,
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


def _fp16_fit(init_scale: float, steps: int = 4) -> AutoMixedPrecision:
    """fp16 autocast with a GradScaler on the CPU (Lightning would turn a plain `16-mixed` into bf16)."""
    torch.manual_seed(0)
    cb = AutoMixedPrecision(precision="16-mixed")
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
        monkeypatch.setattr(AutoMixedPrecision, "immediate_devices", ())
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
def _options() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "optim").glob("*.yaml") if p.stem != "green")


def _leaves(node, prefix=""):
    """{dotted.path: value} of a config, interpolations kept as written."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


# The settings green deliberately tunes beyond the options' own defaults.
GREEN_TUNES = {"callbacks.prune.min_base_macs": 100000}


def test_green_holds_every_landed_option(tmp_path):
    """Every setting an option adds or changes is in green unchanged (fails when green forgets one),
    except the few green tunes on purpose."""
    base = _leaves(OmegaConf.to_container(compose_cfg(tmp_path, [])))
    green = _leaves(OmegaConf.to_container(compose_cfg(tmp_path, ["+optim=green"])))
    assert "amp" in _options()
    for name in _options():
        alone = _leaves(OmegaConf.to_container(compose_cfg(tmp_path, [f"+optim={name}"])))
        changed = {k: v for k, v in alone.items() if k not in base or base[k] != v}
        assert any(k.startswith("callbacks.") for k in changed), f"optim/{name} adds no callbacks.<name>"
        for key, value in changed.items():
            expected = GREEN_TUNES.get(key, value)
            assert key in green and green[key] == expected, (
                f"+optim=green lacks {name}'s {key}: add it to green.yaml"
            )


def test_green_trains(make_cfg):
    cfg = make_cfg("+optim=green", "model=cnn")  # power runs dry in tests (conftest), also on a GPU
    train(cfg)
    s = _summary(cfg)
    assert s["status"] == "completed" and s["optim"] == ["green"]
    assert s["amp/channels_last"] is True and "energy/total_J" in s
