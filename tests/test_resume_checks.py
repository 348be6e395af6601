"""A checkpoint that cannot be resumed from fails before training, in one line that says what differs
and how to resume correctly: truncated, from another net, other data, other optim methods."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import SMALL, compose_cfg, run_cli, train_in_process
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from wattwise.train import train
from wattwise.utils.errors import ConfigError
from wattwise.utils.resume import _check_data
from wattwise.utils.resume_run import expand_resume

SAVED_WITH = ["data=digits", "model=mlp"]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """A finished one-epoch run, with the `.hydra/overrides.yaml` its command line would leave."""
    tmp = tmp_path_factory.mktemp("saved")
    _, run_dir = train_in_process(tmp, SAVED_WITH)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(OmegaConf.create([*SMALL, *SAVED_WITH]), run_dir / ".hydra" / "overrides.yaml")
    return run_dir


def _resume(tmp_path: Path, ckpt: Path, *overrides: str) -> str:
    cfg = compose_cfg(tmp_path, [*overrides, f"ckpt_path={ckpt}"])
    try:
        with pytest.raises(ConfigError) as err:
            train(cfg)
    finally:
        GlobalHydra.instance().clear()
    message = str(err.value)
    assert "\n" not in message and f"ckpt_path={ckpt}" in message
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # stopped before training
    return message


def test_a_truncated_checkpoint_is_one_line_naming_an_intact_one(tmp_path, saved_run):
    last = saved_run / "checkpoints" / "last.ckpt"
    broken = saved_run / "checkpoints" / "copied.ckpt"
    broken.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short
    try:
        message = _resume(tmp_path, broken, *SAVED_WITH)
    finally:
        broken.unlink()
    assert "is truncated or damaged" in message
    assert "Resume from an intact one, e.g. ckpt_path=" in message


def test_a_checkpoint_of_another_net_says_which_and_how_to_resume(tmp_path, saved_run):
    ckpt = saved_run / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    message = _resume(tmp_path, ckpt, "data=digits", "model=cnn")
    assert "is from another model (saved by MLP, this run builds" in message
    assert f"data=digits model=mlp ckpt_path={ckpt}" in message  # the saving run's overrides
    assert "python train.py trainer.max_epochs=1 " in message
    assert str(saved_run / ".hydra" / "config.yaml") in message
    assert ckpt.read_bytes() == before  # nothing written lost


def test_a_checkpoint_of_another_width_names_the_tensor(tmp_path, saved_run):
    message = _resume(tmp_path, saved_run / "checkpoints" / "last.ckpt", *SAVED_WITH, "model.net.hidden=[32]")
    assert "net.features.1.weight is [256, 64] there, [32, 64] here" in message


def test_a_checkpoint_without_the_runs_methods_names_them(tmp_path, saved_run):
    message = _resume(tmp_path, saved_run / "checkpoints" / "last.ckpt", *SAVED_WITH, "+optim=early_stop")
    assert "trained with optim methods none, this run has early_stop" in message


def test_a_checkpoint_of_other_data_names_the_shape():
    checkpoint = {"wattwise.run": {"input_shape": [1, 8, 8], "num_classes": 10}}
    with pytest.raises(ConfigError, match=r"input_shape \[1, 8, 8\] there, \[1, 40\] here"):
        _check_data("x.ckpt", checkpoint, SimpleNamespace(input_shape=(1, 40), num_classes=10), "hint")
    _check_data("x.ckpt", checkpoint, SimpleNamespace(input_shape=(1, 8, 8), num_classes=10), "hint")


@pytest.mark.slow
def test_cli_truncated_checkpoint_is_one_line_and_exit_2(tmp_path, saved_run):
    broken = tmp_path / "last.ckpt"
    shutil.copy(saved_run / "checkpoints" / "last.ckpt", broken)
    with open(broken, "r+b") as f:
        f.truncate(broken.stat().st_size - 100)
    r = run_cli([f"ckpt_path={broken}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln]
    assert lines == [lines[0]] and lines[0].startswith(
        f"wattwise: error: ckpt_path={broken} cannot be loaded"
    )
    assert "Traceback" not in r.stderr


# ---- resume=<run dir> ---------------------------------------------------------------------------
def _run_dir(tmp_path: Path, overrides: list[str]) -> Path:
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "checkpoints").mkdir()
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    return run_dir


def test_resume_takes_the_runs_overrides_and_its_newest_checkpoint(tmp_path):
    run_dir = _run_dir(tmp_path, ["model=cnn", "trainer.max_epochs=10", f"hydra.run.dir={tmp_path}/x"])
    last, hpc = run_dir / "checkpoints" / "last.ckpt", run_dir / "hpc_ckpt_2.ckpt"
    last.write_bytes(b"")
    hpc.write_bytes(b"")
    os.utime(last, (1_000, 1_000))  # the hpc checkpoint is newer (saved at SLURM's warning signal)
    args = expand_resume([f"resume={run_dir}", "trainer.max_epochs=20", "-m"])
    assert args == ["model=cnn", "trainer.max_epochs=20", "-m", f"ckpt_path={hpc}"]


def test_resume_of_a_folder_that_is_not_a_run_dir_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=rf"resume={tmp_path} is not a run dir"):
        expand_resume([f"resume={tmp_path}"])
    run_dir = _run_dir(tmp_path, ["model=cnn"])
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        expand_resume([f"resume={run_dir}"])
    assert expand_resume(["model=mlp"]) == ["model=mlp"]  # no resume=: unchanged
