"""A user's own classes plug in by `_target_` (tests/mypkg), and mistakes about them read as one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import ROOT, compose_cfg, run_cli
from hydra.core.global_hydra import GlobalHydra

from wattwise.train import build, train
from wattwise.utils.errors import ConfigError

TESTS = ROOT / "tests"
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
SHORT = ["trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1"]


@pytest.fixture
def cfg_of(tmp_path):
    def _cfg(*overrides: str):
        return compose_cfg(tmp_path, overrides)

    yield _cfg
    GlobalHydra.instance().clear()


def test_the_readme_plug_in_command_runs_verbatim(tmp_path):
    proc = run_cli(
        [
            "data._target_=mypkg.MyDataModule",
            "model.net._target_=mypkg.MyNet",
            *SHORT,
            f"hydra.run.dir={tmp_path}/r",
        ],
        cwd=tmp_path,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["status"] == "completed" and s["test/acc"] is not None


def test_a_users_own_defaults_are_not_replaced_by_the_bundled_config(cfg_of):
    parts = build(cfg_of("data._target_=mypkg.SignalDataModule", "model.net._target_=mypkg.UserMLP"))
    assert parts["module"].net.hidden == (64, 64)  # its own default, not mlp.yaml's [256]
    assert parts["datamodule"].batch_size == 32  # its own default, not digits.yaml's 64


def test_keys_given_on_the_command_line_still_reach_the_users_class(cfg_of):
    parts = build(
        cfg_of(
            "data._target_=mypkg.SignalDataModule",
            "data.batch_size=8",
            "model.net._target_=mypkg.UserMLP",
            "model.net.hidden=[16]",
        )
    )
    assert parts["module"].net.hidden == (16,) and parts["datamodule"].batch_size == 8


def test_an_argument_the_class_does_not_take_names_the_key_and_the_signature(cfg_of):
    cfg = cfg_of("data._target_=mypkg.SignalDataModule", "+data.colour=red")
    with pytest.raises(
        ConfigError, match=r"data: mypkg.SignalDataModule takes no argument\(s\) \['colour'\]"
    ):
        build(cfg)


def test_a_class_name_typo_names_the_key(cfg_of):
    with pytest.raises(ConfigError, match=r"model\.net\._target_=mypkg\.MyNett cannot be imported"):
        build(cfg_of("model.net._target_=mypkg.MyNett"))


def test_a_net_with_other_argument_names_gets_the_contract_as_a_hint(cfg_of):
    cfg = cfg_of("model.net._target_=torch.nn.Linear")
    with pytest.raises(ConfigError, match="model.net.*in_features.*input_shape.*num_classes") as err:
        build(cfg)
    assert "\n" not in str(err.value)


def test_a_datamodule_without_num_classes_gets_advice_that_works(cfg_of, tmp_path):
    no_classes = ["data._target_=mypkg.TokenDataModule", "model.net._target_=mypkg.TokenTransformer"]
    import mypkg

    original = mypkg.TokenDataModule.__init__

    def without(self, *a, **k):
        original(self, *a, **k)
        del self.num_classes

    mypkg.TokenDataModule.__init__ = without
    try:
        with pytest.raises(ConfigError, match=r"set model\.num_classes=<n>"):
            build(cfg_of(*no_classes))
        GlobalHydra.instance().clear()
        parts = build(compose_cfg(tmp_path / "fixed", [*no_classes, "+model.num_classes=85"]))  # the advice
        assert parts["module"].hparams.num_classes == 85
    finally:
        mypkg.TokenDataModule.__init__ = original


def test_a_bad_optimizer_setting_is_one_line(tmp_path):
    proc = run_cli(["model.optimizer.lr=abc", f"hydra.run.dir={tmp_path}/r"], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wattwise: error: model.optimizer:"), proc.stderr


def test_a_bug_in_a_users_callback_keeps_its_traceback(tmp_path):
    """Only configuration mistakes are one line: an AttributeError inside a user's class shows its cause."""
    proc = run_cli(
        ["+callbacks.buggy._target_=crash_callback.BuggyInit", f"hydra.run.dir={tmp_path}/r"],
        cwd=tmp_path,
        env=ENV,
    )
    assert proc.returncode != 0
    assert "BuggyInit" in proc.stderr and "no_such_attribute" in proc.stderr
    assert "wattwise: error:" not in proc.stderr


def test_green_completes_on_the_gru_and_the_transformer(cfg_of, tmp_path):
    from zoo import ZOO

    for net in ("gru", "transformer"):
        cfg = compose_cfg(tmp_path / net, [*ZOO[net], "+optim=green", "trainer.max_epochs=2"])
        train(cfg)
        s = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
        assert s["status"] == "completed" and s["optim"] == ["green"]
        assert s["power/status"] == "skipped"  # no GPU: steps aside and says so
        if net == "gru":  # torch-pruning finds nothing to prune in a GRU: steps aside, one line
            assert s["prune/status"] == "skipped" and s["prune/skipped"]
        GlobalHydra.instance().clear()
