"""The runnable core: every data/model/trainer/energy/logger config trains a few batches and
writes a summary that holds the contract's fields."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_cfg, run_cli, train_in_process
from hydra.core.global_hydra import GlobalHydra

from wattwise.train import train
from wattwise.utils.errors import ConfigError

CONTRACT = [
    "test/acc",
    "val/acc",
    "val/loss",
    "energy/total_J",
    "energy/epoch_J",
    "energy/J_per_sample",
    "energy/avg_W",
    "energy/source",
    "carbon/gCO2e",
    "time/train_s",
]


def _summary(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())


def _write_tiny_cifar(root: Path, per_batch: int = 20) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize(
    "overrides",
    [
        ["data=digits", "model=mlp"],
        ["data=digits", "model=cnn"],
        ["data=synthetic", "data.num_samples=256", "data.batch_size=32", "model=cnn"],
        [
            "data=synthetic",
            "data.num_samples=128",
            "data.batch_size=16",
            "model=resnet18",
            "model.net.width=8",
        ],
        ["trainer=cpu"],
        ["energy=estimate"],
        ["energy=off"],
        ["logger=csv"],
        ["logger=none", "callbacks=none"],
    ],
    ids=lambda o: ",".join(o),
)
def test_config_trains_and_writes_summary(make_cfg, overrides):
    cfg = make_cfg(*overrides)
    objective = train(cfg)
    s = _summary(cfg)
    assert s["status"] == "completed"
    assert 0.0 <= s["test/acc"] <= 1.0
    assert objective == pytest.approx(s["test/acc"])
    assert s["device"].startswith("cpu")
    if s["energy/source"] == "off":
        assert "energy/total_J" not in s and s["time/train_s"] > 0
    else:
        assert s["energy/total_J"] > 0 and s["energy/source"] == "estimate"  # RAPL pinned off (conftest)


def test_summary_holds_the_contract(make_cfg):
    cfg = make_cfg("trainer.max_epochs=2", "seed=7")
    train(cfg)
    s = _summary(cfg)
    for key in CONTRACT:
        assert key in s, key
    assert s["energy_source"] == s["energy/source"]
    assert "estimate" in s["energy_method"] or s["energy/source"].startswith("zeus")
    assert s["seed"] == 7 and s["epochs"] == 2 and s["optim"] == []
    assert s["versions"]["torch"] == torch.__version__
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()
    assert (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text().count("energy/total_J") == 1


def test_run_wide_overrides_take_effect(make_cfg):
    cfg = make_cfg("data.batch_size=16", "trainer.max_epochs=2", "seed=3")
    train(cfg)
    s = _summary(cfg)
    assert s["epochs"] == 2
    assert s["global_step"] == 2 * 3  # limit_train_batches=3 per epoch
    assert s["energy/J_per_sample"] == pytest.approx(s["energy/total_J"] / (2 * 3 * 16))


def test_seed_makes_runs_repeatable(tmp_path):
    results = []
    for i in range(2):
        cfg = compose_cfg(tmp_path / str(i), ["seed=11", "energy=off"])
        train(cfg)
        results.append(_summary(cfg)["val/loss"])
        GlobalHydra.instance().clear()
    assert results[0] == pytest.approx(results[1], rel=1e-6)


def test_cifar10_reads_the_original_pickles(make_cfg, tmp_path):
    _write_tiny_cifar(tmp_path / "data")
    cfg = make_cfg("data=cifar10", "data.batch_size=16", "data.eval_batch_size=16", "model=cnn")
    train(cfg)
    assert _summary(cfg)["status"] == "completed"


def test_cifar10_missing_without_download_says_how_to_fix(make_cfg):
    cfg = make_cfg("data=cifar10")
    with pytest.raises(ConfigError, match="data.download=true"):
        train(cfg)


def test_gpu_trainer_config_composes(make_cfg):
    cfg = make_cfg("trainer=gpu")
    assert cfg.trainer.accelerator == "gpu"


# A check on real hardware, not a branch chosen by the host: it runs where a card is lent.
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_trainer_trains_on_the_card(make_cfg):
    cfg = make_cfg("trainer=gpu")
    train(cfg)
    assert _summary(cfg)["device"].startswith("cuda")


def test_default_run_reaches_95_percent(make_cfg):
    cfg = make_cfg("++callbacks.progress_bar=null", "+trainer.enable_progress_bar=false", small=False)
    train(cfg)
    s = _summary(cfg)
    assert s["test/acc"] >= 0.95, s["test/acc"]
    assert s["epochs"] == 10


@pytest.mark.slow
def test_cli_default_prints_the_table(tmp_path):
    proc = run_cli(["trainer.max_epochs=2", f"hydra.run.dir={tmp_path}/run"], cwd=ROOT, pin=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from omegaconf import OmegaConf

    resolved = OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml")  # the shipped default
    assert resolved.data._target_ == "wattwise.data.MNIST1DDataModule"
    assert resolved.model.net._target_ == "wattwise.models.sequence.Conv1DNet"
    for line in ("test accuracy", "energy", "average power", "energy / train sample", "wall time", "CO2e"):
        assert line in proc.stdout, line
    assert "ESTIMATE" in proc.stdout or "measured" in proc.stdout
    assert (tmp_path / "run" / "summary.json").is_file()
    # stdout is a pipe, not a terminal: one progress line per epoch, no carriage-return frames
    assert "\r" not in proc.stdout and "\r" not in proc.stderr
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("Epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], proc.stdout[-2000:]
    assert all("val/acc=" in line and "energy/spent_J=" in line for line in epochs)


@pytest.mark.slow
def test_multirun_writes_one_summary_per_job(tmp_path):
    proc = run_cli(
        [
            "-m",
            "model=mlp,cnn",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=3",
            "+trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summaries = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(summaries) == 2
    models = {json.loads(p.read_text())["overrides"][0] for p in summaries}
    assert models == {"model=mlp", "model=cnn"}


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    from datetime import datetime, timezone

    from fake_intensity_provider import Script, fake_provider, hourly

    # A rising forecast from this hour: starting now is the cleanest, so nothing waits. Only the first
    # process may ask the provider: one latest (the monitor) and one forecast (carbon_aware) in all.
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    script = Script(latest=200.0, forecast=hourly(hour, [100, 200, 300, 400, 500, 600]))
    with fake_provider(script) as url:
        proc = run_cli(
            [
                "trainer=ddp",
                "trainer.accelerator=cpu",
                "trainer.devices=2",
                "trainer.max_epochs=1",
                "+trainer.limit_train_batches=3",
                "+trainer.limit_val_batches=2",
                "+trainer.enable_progress_bar=false",
                "callbacks.progress_bar=null",
                "energy=estimate",
                "+optim=carbon_aware",
                "energy.region=DE",
                f"energy.provider.endpoint={url}",
                f"hydra.run.dir={tmp_path}/run",
            ],
            cwd=ROOT,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["status"] == "completed" and "x2 processes" in s["device"]
    # totals and samples are summed over both processes: 2 x 3 batches x 64 samples
    assert s["energy/J_per_sample"] == pytest.approx(s["energy/total_J"] / (3 * 64 * 2), rel=1e-9)
    assert sorted(r["path"].rsplit("/", 1)[1] for r in script.requests) == ["forecast", "latest"]
    assert s["carbon_aware/decision"] == "started_now" and s["carbon/intensity_source"].startswith("live:")
    assert s["carbon/intensity_gCO2_per_kWh"] == 200.0


def test_user_datamodule_and_net_plug_in_by_target(make_cfg):
    from omegaconf import OmegaConf, open_dict

    cfg = make_cfg("trainer.max_epochs=2")
    with open_dict(cfg):
        cfg.data = OmegaConf.create({"_target_": "mypkg.MyDataModule", "batch_size": 16})
        cfg.model.net = OmegaConf.create({"_target_": "mypkg.MyNet", "width": 8})
    train(cfg)
    s = _summary(cfg)
    assert s["status"] == "completed" and 0.0 <= s["test/acc"] <= 1.0
    assert s["energy/J_per_sample"] == pytest.approx(s["energy/total_J"] / (2 * 3 * 16))


class _CtrlC:
    """Raises KeyboardInterrupt mid-epoch, as Ctrl+C would."""

    def __new__(cls):
        import lightning as L

        class _Raise(L.Callback):
            def on_train_batch_end(self, trainer, *args, **kwargs):
                if trainer.global_step == 2:
                    raise KeyboardInterrupt

        return _Raise()


class _Crash:
    def __new__(cls):
        import lightning as L

        class _Raise(L.Callback):
            def on_train_batch_end(self, trainer, *args, **kwargs):
                raise RuntimeError("boom in training")

        return _Raise()


@pytest.mark.parametrize(("target", "status"), [("_CtrlC", "interrupted"), ("_Crash", "failed")])
def test_a_stopped_run_still_leaves_its_summary(make_cfg, target, status):
    cfg = make_cfg(f"+callbacks.stop._target_=test_train.{target}")
    with pytest.raises((SystemExit, RuntimeError)):
        train(cfg)
    s = _summary(cfg)
    assert s["status"] == status
    assert s["energy/total_J"] > 0  # what was spent before the stop is kept
    if status == "failed":
        assert "boom in training" in s["error"]


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_experiment_recipes_train(make_cfg, tmp_path, experiment):
    _write_tiny_cifar(tmp_path / "data")
    extra = ["model.net.width=8", "data.batch_size=16"] if "resnet" in experiment else []
    cfg = make_cfg(f"experiment={experiment}", "trainer.max_epochs=3", *extra)
    train(cfg)
    s = _summary(cfg)
    assert s["status"] == "completed"
    assert s["optim"] == ["green"]  # labelled by the recipe, as +optim=green is
    assert s["prune/macs"] < s["prune/base_macs"]


def test_switching_checkpoints_and_the_progress_bar_off_on_the_trainer_is_enough(tmp_path):
    """Lightning refuses enable_checkpointing=False beside a ModelCheckpoint (and the same for the
    progress bar); the always-on ones are left out instead of making the run fail."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.callbacks.progress import ProgressBar

    from wattwise.train import build

    off = ["++trainer.enable_checkpointing=false", "++trainer.enable_progress_bar=false"]
    trainer = build(compose_cfg(tmp_path, off))["trainer"]
    assert not [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint | ProgressBar)]
    kept = build(compose_cfg(tmp_path / "on"))["trainer"]
    assert sum(isinstance(cb, ModelCheckpoint) for cb in kept.callbacks) == 2  # best val/acc and last
    summary, _ = train_in_process(tmp_path / "run", off)
    assert summary["status"] == "completed" and summary["test/acc"] > 0
