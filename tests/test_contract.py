"""The method contract, tested over the registry x a zoo of user nets (tests/zoo.py).

For every registered method, and every recipe, on every net: it trains a few batches; its
figures are JSON-safe and reach summary.json and the loggers (every figure it promises in
`summary_keys`, unless it stepped aside, saying why); resuming from a mid-run checkpoint ends in
the same state as the uninterrupted run; a bad setting fails with one line naming the key.
Every pair of methods composes. A method is covered the moment it is registered; deliberately
broken methods (tests/broken_methods.py) must fail these checks.

Host-independent: the CPU trainer is forced and bf16 detection pinned, so each machine tests
the same branch.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import compose_cfg, run_cli, train_in_process
from hydra.core.global_hydra import GlobalHydra
from method_settings import ACT_QUICKLY, BAD_SETTING
from zoo import ZOO

from wattwise.methods import registry
from wattwise.methods.amp import callback as precision
from wattwise.methods.base import STATUS_SKIPPED
from wattwise.train import build
from wattwise.utils.errors import ConfigError

METHODS = registry.method_names()
RECIPES = registry.recipe_names()
OPTIONS = METHODS + RECIPES

# Two epochs of two batches, checkpoints every epoch (monitor off, so the newest is kept), on the CPU.
RUN = [
    "trainer.max_epochs=2",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
    "trainer.accelerator=cpu",
    "callbacks.model_checkpoint.monitor=null",
    "test=false",  # the test pass checks nothing of the contract; the plug-in tests run it
]


@pytest.fixture(autouse=True)
def _pinned_hardware(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)


def option_overrides(option: str, skip: bool = True) -> list[str]:
    """`+optim=<option>` plus the settings that let it act in two epochs; alone it steps aside (skip)."""
    members = registry.recipe_members(option) if option in RECIPES else [option]
    out = [f"+optim={option}"]
    for m in members:
        out += ACT_QUICKLY.get(m, [])
        if skip and option in METHODS:
            out.append(f"callbacks.{m}.if_not_applicable=skip")
    return out


def run(path: Path, overrides: list[str]) -> tuple[dict[str, Any], Path]:
    return train_in_process(path, [*RUN, *overrides])


# ---- the checks (functions, so the broken methods can be run through them too) -----------------
def logged_names(run_dir: Path) -> set[str]:
    names: set[str] = set()
    for path in run_dir.glob("**/metrics.csv"):
        with path.open() as f:
            names |= set(next(csv.reader(f)))
    return names


def check_reports(summary: dict[str, Any], run_dir: Path, name: str, cls: type) -> None:
    """Trained, JSON-safe, the promised figures in summary.json, the numeric ones in the logger."""
    assert summary["status"] == "completed", summary.get("error")
    json.dumps(summary, allow_nan=False)
    status = summary.get(f"{name}/status")
    assert status is not None, f"{name} reports no {name}/status"
    if status == STATUS_SKIPPED:
        assert summary.get(f"{name}/skipped"), f"{name} stepped aside without saying why"
        return
    missing = [k for k in cls.summary_keys if k not in summary]
    assert not missing, f"{name} promised {missing} but summary.json lacks them"
    logged = logged_names(run_dir)
    numeric = [
        k
        for k in cls.summary_keys
        if isinstance(summary[k], int | float) and not isinstance(summary[k], bool)
    ]
    assert all(k in logged for k in numeric), (
        f"{name}: {[k for k in numeric if k not in logged]} never logged"
    )


def fingerprint(value: Any) -> Any:
    """A state's structure and exact discrete values; floats (energies, metrics) only checked finite."""
    if isinstance(value, dict):
        return {str(k): fingerprint(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [fingerprint(v) for v in value]
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype))
    if isinstance(value, float):
        return "float" if math.isfinite(value) else "nonfinite"
    return value


def checkpoint_state(run_dir: Path) -> dict[str, Any]:
    return checkpoint_file_state(run_dir / "checkpoints" / "last.ckpt")


def checkpoint_file_state(path: Path) -> dict[str, Any]:
    """Epoch, step, parameter shapes and the callbacks' fingerprinted state of one checkpoint file."""
    ckpt = torch.load(path, weights_only=False, map_location="cpu")
    return {
        "epoch": ckpt["epoch"],
        "global_step": ckpt["global_step"],
        "shapes": {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()},
        "callbacks": fingerprint({k: v for k, v in ckpt["callbacks"].items() if "Checkpoint" not in k}),
    }


def check_resume(path: Path, overrides: list[str]) -> tuple[dict[str, Any], Path]:
    """Train 2 epochs; train 1, resume to 2: the final checkpoints hold the same state.

    Returns the uninterrupted run's summary and run dir."""
    full_summary, full = run(path / "full", overrides)
    _, half = run(path / "half", [*overrides, "trainer.max_epochs=1"])
    summary, resumed = run(path / "resumed", [*overrides, f"ckpt_path={half}/checkpoints/last.ckpt"])
    assert summary["status"] == "completed", summary.get("error")
    a, b = checkpoint_state(full), checkpoint_state(resumed)
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    assert a["shapes"] == b["shapes"], "the resumed net's architecture differs"
    for key in a["callbacks"]:
        assert b["callbacks"].get(key) == a["callbacks"][key], f"{key}'s state differs after a resume"
    return full_summary, full


def _cls(option: str) -> type:
    return registry.method_classes()[option]


def _members(option: str) -> list[str]:
    return registry.recipe_members(option) if option in RECIPES else [option]


# ---- the matrix ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("net", list(ZOO))
@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_on_every_net_trains_reports_and_resumes(tmp_path, option, net):
    overrides = [*ZOO[net], *option_overrides(option)]
    summary, run_dir = check_resume(tmp_path, overrides)
    assert summary["optim"] == [option]
    for name in _members(option):
        check_reports(summary, run_dir, name, _cls(name))


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(METHODS, 2)))
def test_every_pair_of_methods_composes(tmp_path, a, b):
    net = "cnn1d"  # a net every method acts on
    summary, run_dir = run(tmp_path, [*ZOO[net], f"+optim=[{a},{b}]", *_quick(a, b)])
    assert summary["optim"] == [a, b]
    for name in (a, b):
        check_reports(summary, run_dir, name, _cls(name))


def _quick(*names: str) -> list[str]:
    out = []
    for n in names:
        out += [*ACT_QUICKLY.get(n, []), f"callbacks.{n}.if_not_applicable=skip"]
    return out


@pytest.mark.parametrize("option", METHODS)
def test_a_bad_setting_fails_in_one_line_naming_the_key(tmp_path, option):
    override, key = BAD_SETTING.get(option, (f"callbacks.{option}.if_not_applicable=maybe", ""))
    key = key or f"callbacks.{option}.if_not_applicable"
    cfg = compose_cfg(tmp_path, [*RUN, f"+optim={option}", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        build(cfg)
    assert "\n" not in str(err.value)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("option", METHODS)
def test_if_not_applicable_is_checked(tmp_path, option):
    cfg = compose_cfg(tmp_path, [*RUN, f"+optim={option}", f"callbacks.{option}.if_not_applicable=maybe"])
    with pytest.raises(ConfigError, match=rf"callbacks\.{option}\.if_not_applicable must be fail or skip"):
        build(cfg)
    GlobalHydra.instance().clear()


def test_a_method_asked_for_alone_that_does_not_apply_fails_in_one_line(tmp_path):
    """power on a CPU: the run stops before training, one line naming the key and the way out."""
    proc = run_cli([*RUN, "+optim=power", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wattwise: error: +optim=power does not apply here")
    assert "callbacks.power.if_not_applicable=skip" in lines[0]


# ---- the checks catch broken methods ------------------------------------------------------------
def test_a_method_missing_a_promised_figure_fails_the_contract(tmp_path):
    from broken_methods import MissingFigure

    summary, run_dir = run(tmp_path, ["+callbacks.broken._target_=broken_methods.MissingFigure"])
    with pytest.raises(AssertionError, match=r"promised \['broken/count'\]"):
        check_reports(summary, run_dir, "broken", MissingFigure)


def test_a_method_that_forgets_its_state_on_resume_fails_the_contract(tmp_path):
    with pytest.raises(AssertionError, match="wattwise.broken's state differs"):
        check_resume(tmp_path, ["+callbacks.broken._target_=broken_methods.ForgetfulCounter"])


# ---- the registry -------------------------------------------------------------------------------
def test_registry_names_files_classes_and_state_keys_agree():
    for name, cls in registry.method_classes().items():
        assert cls.name == name and cls.figure_prefix.endswith("/")
        assert all(k.startswith(cls.figure_prefix) for k in cls.summary_keys), name
        assert (registry.OPTIM_DIR / f"{name}.yaml").exists()
    assert "green" in RECIPES and not (registry.OPTIM_DIR / "green.yaml").exists()


@pytest.mark.parametrize(
    ("overrides", "label"),
    [
        (["+optim=green"], ["green"]),
        (["optim=[green]"], ["green"]),
        (["experiment=cnn_digits_green"], ["green"]),
        (["+optim=[prune,amp]"], ["amp", "prune"]),
        (["+optim=[amp,prune]"], ["amp", "prune"]),
        ([], []),
    ],
)
def test_runs_are_labelled_from_the_registry(tmp_path, overrides, label):
    assert registry.run_label(compose_cfg(tmp_path, overrides)) == label
    GlobalHydra.instance().clear()


def test_sweep_and_search_space_read_the_registry():
    choices = registry.sweep_choices()
    compared = registry.compared_method_names()
    assert choices[0] == "[]" and all(f"[{m}]" in choices for m in compared) and "[green]" in choices
    assert set(compared) == {m for m in METHODS if registry.method_classes()[m].in_comparisons}
    assert "[carbon_aware]" not in choices  # it moves energy in time: offline it repeats the baseline
    search = registry.search_choices()
    assert set(choices) <= set(search) and "[amp,prune]" in search  # the search adds every pair
    assert registry.optim_search_space() == "choice(" + ", ".join(search) + ")"
