"""Preemption, with real signals sent to `train.py` subprocesses: SIGTERM mid-epoch leaves a
checkpoint of that moment and exit code 143, and a resumed run ends where an uninterrupted one
does; under (simulated) SLURM the requeue signal saves an hpc checkpoint and calls `scontrol
requeue`, and the requeued job resumes from the newest hpc checkpoint with its energy intact."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SMALL, pinned, train_in_process

from wattwise.utils.summary import read_summary

EPOCHS = ["trainer.max_epochs=3"]
PRUNE = ["+optim=prune", "callbacks.prune.start_epoch=0", "callbacks.prune.end_epoch=2"]


def _pause(marker: Path) -> list[str]:
    """Hold the run at epoch 1, batch 1 (mid-epoch) until it receives SIGTERM (tests/pause_callback.py)."""
    return ["+callbacks.pause._target_=pause_callback.PauseForSignal", f"+callbacks.pause.marker={marker}"]


def _start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python train.py ...` in the background, as run_cli runs it (same pinning, same settings)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "tests"), full_env.get("PYTHONPATH", "")]
    )
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, *pinned(args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {path.name} appeared:\n{proc.stdout.read()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def _train_here(tmp: Path, overrides: list[str]) -> Path:
    """An in-process run with the SMALL settings (a subprocess is only needed for a real signal)."""
    return train_in_process(tmp, overrides)[1]


def _ckpt(path: Path) -> dict:
    return torch.load(path, weights_only=False, map_location="cpu")


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in _ckpt(path)["state_dict"].items()}


def _check_energy_carried_over(saved: dict, resumed_last: dict, resumed_summary: dict) -> None:
    """The resumed run's energy is the checkpoint's plus what it spent itself, epoch by epoch."""
    before, after = saved["callbacks"]["EnergyMonitor"], resumed_last["callbacks"]["EnergyMonitor"]
    assert before["total_J"] > 0
    n = len(before["epoch_energies_J"])
    assert after["epoch_energies_J"][:n] == before["epoch_energies_J"]  # carried over exactly
    spent_after = sum(after["epoch_energies_J"][n:])
    assert resumed_summary["energy/total_J"] >= before["total_J"] + spent_after - 1e-9


@pytest.mark.slow
def test_sigterm_mid_epoch_checkpoints_exits_143_and_resumes_to_the_same_end(tmp_path):
    args = [*EPOCHS, *PRUNE]
    full = _train_here(tmp_path / "full", args)

    marker = tmp_path / "paused"
    proc = _start([*SMALL, *args, *_pause(marker), f"hydra.run.dir={tmp_path / 'cut'}"], cwd=tmp_path)
    _wait_for(marker, proc)
    proc.send_signal(15)  # SIGTERM, what scancel and preemption send
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 143, out[-3000:]
    assert "wattwise run [interrupted]" in out  # the table still reaches the terminal
    cut = read_summary(tmp_path / "cut")
    assert cut["status"] == "interrupted"
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    saved = _ckpt(last)
    assert saved["global_step"] == 5  # epoch 1, batch 1: the moment of interruption, not epoch 0's end

    resumed = _train_here(tmp_path / "resumed", [*args, f"ckpt_path={last}"])
    a, b = read_summary(full), read_summary(resumed)
    assert b["status"] == "completed"
    assert (b["epochs"], b["global_step"]) == (a["epochs"], a["global_step"]) == (3, 9)
    assert b["prune/params"] == a["prune/params"] < a["prune/base_params"]  # pruned to the same net
    resumed_last = resumed / "checkpoints" / "last.ckpt"
    assert _shapes(resumed_last) == _shapes(full / "checkpoints" / "last.ckpt")
    _check_energy_carried_over(saved, _ckpt(resumed_last), b)


SLURM_ENV = {
    "SLURM_NTASKS": "1",  # with SLURM_JOB_NAME not `bash`/`interactive`: Lightning's SLURMEnvironment
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "wattwise-test",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}


@pytest.mark.slow
def test_slurm_requeue_signal_requeues_and_the_requeued_job_resumes(tmp_path, monkeypatch):
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    fake = bin_dir / "scontrol"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = {**SLURM_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    run_dir = tmp_path / "job" / "run"  # the same dir after the requeue (README: hydra.run.dir)
    args = [*SMALL, *EPOCHS, f"hydra.run.dir={run_dir}"]

    marker = tmp_path / "paused"
    proc = _start([*args, *_pause(marker)], cwd=tmp_path, env=env)
    _wait_for(marker, proc)
    proc.send_signal(10)  # SIGUSR1: `#SBATCH --signal=USR1@90`, SLURM's warning before the end
    _wait_for(calls, proc)
    proc.send_signal(15)  # then the requeue ends the job like scancel: SIGTERM
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 143, out[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    assert read_summary(run_dir)["status"] == "interrupted"
    hpc = sorted(p.name for p in run_dir.glob("hpc_ckpt_*.ckpt"))
    assert hpc == ["hpc_ckpt_1.ckpt", "hpc_ckpt_2.ckpt"]  # at the signal, and at the SIGTERM
    saved = _ckpt(run_dir / "hpc_ckpt_2.ckpt")
    assert saved["global_step"] == 5

    for key, value in {**SLURM_ENV, "SLURM_RESTART_COUNT": "1"}.items():  # the requeued job, in-process
        monkeypatch.setenv(key, value)
    assert _train_here(tmp_path / "job", EPOCHS) == run_dir  # no ckpt_path: the newest hpc one
    summary = read_summary(run_dir)
    assert (summary["status"], summary["epochs"], summary["global_step"]) == ("completed", 3, 9)
    _check_energy_carried_over(saved, _ckpt(run_dir / "checkpoints" / "last.ckpt"), summary)


def test_last_ckpt_is_the_best_checkpoints_file_on_an_improving_epoch_and_its_own_otherwise(tmp_path):
    """One serialisation per epoch: an improving epoch's last.ckpt is a hard link to its new best
    checkpoint (the same state); a non-improving epoch writes last.ckpt itself; both resume."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from wattwise.utils.checkpoint_io import AtomicCheckpointIO, LeanModelCheckpoint
    from wattwise.utils.preemption import LastCheckpoint

    scores = [1.0, 2.0, 1.5, 3.0]  # improves at epochs 0, 1 and 3, not at 2

    class Scripted(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val/score", scores[self.current_epoch])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    same_file: list[bool] = []
    ckpts = tmp_path / "checkpoints"

    class Probe(L.Callback):  # after the epoch's saves: at the next epoch's start, and at fit end
        def _look(self, trainer):
            best = trainer.checkpoint_callbacks[0].best_model_path
            same_file.append(os.path.samefile(ckpts / "last.ckpt", best))

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch > 0:
                self._look(trainer)

        def on_fit_end(self, trainer, pl_module):
            self._look(trainer)

    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)

    def trainer_with_both_checkpoints(max_epochs: int, *first: L.Callback) -> L.Trainer:
        best = LeanModelCheckpoint(
            dirpath=ckpts,
            filename="epoch{epoch:03d}",
            monitor="val/score",
            mode="max",
            auto_insert_metric_name=False,
        )
        return L.Trainer(
            max_epochs=max_epochs,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            plugins=[AtomicCheckpointIO()],
            callbacks=[*first, best, LastCheckpoint(dirpath=str(ckpts))],
        )

    trainer = trainer_with_both_checkpoints(4, Probe())
    trainer.fit(Scripted(), data, data)
    assert same_file == [True, True, False, True]
    last = _ckpt(ckpts / "last.ckpt")
    assert last["epoch"] == 3 and last["global_step"] == 8
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch003.ckpt", "last.ckpt"]
    resumed = trainer_with_both_checkpoints(5)
    scores.append(0.5)
    resumed.fit(Scripted(), data, data, ckpt_path=str(ckpts / "last.ckpt"))
    assert resumed.current_epoch == 5 and _ckpt(ckpts / "last.ckpt")["global_step"] == 10
    assert os.path.isfile(ckpts / "epoch003.ckpt")  # the best kept its own contents
    assert _ckpt(ckpts / "epoch003.ckpt")["global_step"] == 8


def test_last_ckpt_is_linked_only_where_a_checkpoint_is_one_file_from_the_atomic_writer():
    from lightning.pytorch.plugins.io import TorchCheckpointIO
    from lightning.pytorch.strategies import (
        DDPStrategy,
        DeepSpeedStrategy,
        FSDPStrategy,
        SingleDeviceStrategy,
    )

    from wattwise.utils.checkpoint_io import AtomicCheckpointIO, _one_file_per_checkpoint

    atomic = AtomicCheckpointIO()
    assert _one_file_per_checkpoint(SingleDeviceStrategy("cpu", checkpoint_io=atomic))
    assert _one_file_per_checkpoint(DDPStrategy(checkpoint_io=atomic))
    assert not _one_file_per_checkpoint(SingleDeviceStrategy("cpu", checkpoint_io=TorchCheckpointIO()))
    assert not _one_file_per_checkpoint(FSDPStrategy(checkpoint_io=atomic))  # sharded: a folder
    deepspeed = DeepSpeedStrategy.__new__(DeepSpeedStrategy)  # its __init__ needs deepspeed installed
    assert not _one_file_per_checkpoint(deepspeed)
