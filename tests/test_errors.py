"""Bad input fails fast: one or two lines naming the key and the fix, a non-zero exit, no traceback."""

from __future__ import annotations

import pytest
from cli_fork import run_forked
from conftest import ROOT, pinned
from omegaconf import OmegaConf

from wattwise.utils.errors import ConfigError
from wattwise.utils.validate import validate_config

BASE = {
    "data": {"batch_size": 64},
    "trainer": {"max_epochs": 3},
    "energy": {"grid_gCO2_per_kWh": 475.0},
    "paths": {"data_dir": "data"},
    "seed": 1,
    "ckpt_path": None,
}


def _cfg(**changes):
    cfg = OmegaConf.create(BASE)
    for key, value in changes.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data__batch_size": 0}, "data.batch_size must be a positive integer"),
        ({"data__batch_size": -8}, "data.batch_size must be a positive integer"),
        ({"data__batch_size": 2.5}, "data.batch_size must be a positive integer"),
        ({"trainer__max_epochs": 0}, "trainer.max_epochs must be a positive integer"),
        ({"energy__grid_gCO2_per_kWh": -1.0}, "energy.grid_gCO2_per_kWh must be a number >= 0"),
        ({"energy__mode": "sometimes"}, "energy.mode must be auto, estimate or off"),
        ({"ckpt_path": "/nonexistent/last.ckpt"}, "ckpt_path=/nonexistent/last.ckpt is not a file"),
        ({"seed": "abc"}, "seed must be an integer"),
    ],
)
def test_validate_rejects(changes, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate_config(_cfg(**changes))


def test_validate_rejects_unreadable_data_dirs(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        validate_config(_cfg(paths__data_dir=str(a_file)))
    with pytest.raises(ConfigError, match="cannot be created"):
        validate_config(_cfg(paths__data_dir=str(a_file / "sub")))
    validate_config(_cfg(paths__data_dir=str(tmp_path / "new")))  # creatable: fine


BAD_INPUT = [
    (["data.batch_size=0"], "data.batch_size must be a positive integer"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs must be a positive integer"),
    (["energy.grid_gCO2_per_kWh=-3"], "energy.grid_gCO2_per_kWh"),
    (["paths.data_dir=/proc/version"], "is not a directory"),
    (["model=transformer"], "Could not find 'model/transformer'"),
    (["model.net.hidden_size=3"], "hidden_size"),
]


@pytest.mark.slow
def test_cli_bad_input_is_one_clear_line(tmp_path):
    """Each case as `python train.py <args>` (forked from one start-up: tests/cli_fork.py)."""
    cases = []
    for i, (args, _) in enumerate(BAD_INPUT):
        out = tmp_path / f"case{i}"
        out.mkdir()
        full = [*args, f"hydra.run.dir={out}/run"]
        cases.append({"args": [*full, *pinned(full)], "cwd": str(ROOT), "timeout": 120, "out": str(out)})
    for i, ((args, expect), r) in enumerate(
        zip(BAD_INPUT, run_forked(cases, tmp_path / "fork"), strict=True)
    ):
        assert r["rc"] not in (0, None), (args, r["stderr"][-2000:])
        assert expect in r["stderr"], (args, r["stderr"][-2000:])
        assert "Traceback" not in r["stderr"], (args, r["stderr"][-2000:])
        assert not (tmp_path / f"case{i}" / "run" / "checkpoints").exists(), args  # failed before training


def test_a_config_naming_a_methods_old_class_fails_in_one_line_naming_the_new_one():
    from omegaconf import OmegaConf

    from wattwise.utils.errors import ConfigError
    from wattwise.utils.instantiate import MOVED_TARGETS, locate

    node = OmegaConf.create({"_target_": "wattwise.optim.prune.StructuredPruning"})
    with pytest.raises(ConfigError) as err:
        locate("callbacks.prune", node)
    msg = str(err.value)
    assert "\n" not in msg and "wattwise.methods.prune.callback.Prune" in msg
    for new in MOVED_TARGETS.values():  # every new target is real
        assert locate("k", OmegaConf.create({"_target_": new})).__name__ == new.rpartition(".")[2]
