"""A full disk or an unwritable output folder: one line naming the path and what could not be
written, a non-zero exit, the summary and table still shown, and nothing already written lost.
Run and sweep dirs are unique even for runs started in the same second."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SMALL, compose_cfg, run_cli
from hydra.core.global_hydra import GlobalHydra

from wattwise.train import train
from wattwise.utils import atomic_write as atomic_write_module
from wattwise.utils.checkpoint_io import AtomicCheckpointIO
from wattwise.utils.errors import OutputError
from wattwise.utils.run_dirs import check_writable_dir, run_stamp
from wattwise.utils.summary import save_summary


def _disk_full_after(monkeypatch, good_writes: int) -> None:
    """Every write through atomic_write after the first `good_writes` fails as a full disk does:
    part of the data reaches the temporary file, then the flush to disk fails with ENOSPC."""
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] > good_writes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(atomic_write_module.os, "fsync", fsync)


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    _disk_full_after(monkeypatch, 0)
    with pytest.raises(OutputError) as err:
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    assert str(err.value) == (
        f"could not write checkpoint {path}: No space left on device (the previous file is kept)"
    )
    assert err.value.errno == errno.ENOSPC
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_a_link_fails_like_a_write_and_falls_back_to_a_copy(tmp_path, monkeypatch):
    from wattwise.utils.atomic_write import link_atomically

    best, last = tmp_path / "epoch003.ckpt", tmp_path / "last.ckpt"
    best.write_bytes(b"best")
    last.write_bytes(b"old last")
    with pytest.raises(OutputError) as err:
        link_atomically(tmp_path / "gone.ckpt", last, "checkpoint")
    assert (
        str(err.value)
        == f"could not write checkpoint {last}: No such file or directory (the previous file is kept)"
    )
    assert err.value.errno == errno.ENOENT and last.read_bytes() == b"old last"
    link_atomically(best, last, "checkpoint")
    assert os.path.samefile(best, last)

    def no_links(src, dst):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_links)
    link_atomically(best, tmp_path / "copy.ckpt", "checkpoint")
    assert (tmp_path / "copy.ckpt").read_bytes() == b"best" and not os.path.samefile(
        best, tmp_path / "copy.ckpt"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.ckpt", "epoch003.ckpt", "last.ckpt"]


def test_a_summary_that_cannot_be_written_is_logged_instead(tmp_path, monkeypatch, caplog):
    _disk_full_after(monkeypatch, 0)
    with caplog.at_level(logging.INFO):
        err = save_summary(tmp_path, {"status": "completed", "energy/total_J": 12.5})
    assert isinstance(err, OutputError) and str(tmp_path / "summary.json") in str(err)
    assert '"energy/total_J": 12.5' in caplog.text  # the figures reach the log
    assert list(tmp_path.iterdir()) == []


def test_disk_full_mid_run_keeps_last_ckpt_and_still_prints_the_table(tmp_path, monkeypatch, capsys, caplog):
    cfg = compose_cfg(tmp_path, ["trainer.max_epochs=3"])
    _disk_full_after(
        monkeypatch, 1
    )  # epoch 0's best checkpoint fits (last.ckpt: a link to it), nothing after
    try:
        with caplog.at_level(logging.INFO), pytest.raises(OutputError, match="could not write checkpoint"):
            train(cfg)
    finally:
        GlobalHydra.instance().clear()
    run_dir = Path(cfg.paths.output_dir)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert last["epoch"] == 0  # the last good checkpoint, whole
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))
    assert "wattwise run [failed]" in capsys.readouterr().out  # the table reaches the terminal
    assert "could not write the run summary" in caplog.text and '"status": "failed"' in caplog.text


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {r.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A 300 kB tmpfs: one checkpoint of the default task (166 kB; last.ckpt is a link to it) and the
    run's small files fit, a second checkpoint does not."""
    where = tmp_path / "disk"
    _mount_tmpfs(where, "size=300k")
    yield where
    subprocess.run(["umount", str(where)], check=False)


@pytest.mark.slow
def test_cli_full_disk_is_one_line_exit_1_and_the_last_good_checkpoint_stays(tmp_path, small_disk):
    run_dir = small_disk / "run"
    r = run_cli([*SMALL, "trainer.max_epochs=3", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("wattwise: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(run_dir) in errors[0]
    assert "Traceback" not in r.stderr
    assert "wattwise run [failed]" in r.stdout
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder this process cannot write: read-only permissions, or for root (whom permissions do
    not stop) a read-only tmpfs."""
    where = tmp_path / "readonly"
    if os.geteuid() != 0:
        where.mkdir()
        where.chmod(0o555)
        yield where
        where.chmod(0o755)
        return
    _mount_tmpfs(where, "size=100k,ro")
    yield where
    subprocess.run(["umount", str(where)], check=False)


def test_an_unwritable_run_dir_stops_before_hydra_writes_there(unwritable_dir, capsys):
    with pytest.raises(SystemExit) as stop:
        check_writable_dir(unwritable_dir / "run", "hydra.run.dir")
    assert stop.value.code == 1
    assert capsys.readouterr().err.startswith(
        f"wattwise: error: hydra.run.dir: cannot create the output folder {unwritable_dir / 'run'}: "
    )
    assert not (unwritable_dir / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("multirun", [False, True])
def test_cli_unwritable_run_dir_is_one_line_and_exit_1(tmp_path, unwritable_dir, multirun):
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    r = run_cli([*(["-m"] if multirun else []), f"{key}={unwritable_dir / 'run'}"], cwd=tmp_path, timeout=120)
    assert r.returncode == 1, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == [
        f"wattwise: error: {key}: cannot create the output folder {unwritable_dir / 'run'}: "
        f"{'Read-only file system' if os.geteuid() == 0 else 'Permission denied'}. "
        f"Choose a writable folder, e.g. {key}=/tmp/wattwise-run"
    ]


def test_run_stamps_differ_within_one_second_and_sort_by_time():
    t1, t2 = datetime(2026, 12, 1, 10, 34, 24, 512000), datetime(2026, 12, 1, 10, 34, 24, 513000)
    assert run_stamp(t1, pid=4567) == "10-34-24.512-4567"
    assert run_stamp(t1, pid=1) != run_stamp(t1, pid=2)  # the same millisecond, two processes
    assert run_stamp(t1, pid=1) != run_stamp(t2, pid=1)  # two containers whose runs are pid 1
    # `make compare` takes `ls -d outputs/multirun/*/* | sort | tail -1` as the newest sweep
    assert sorted([run_stamp(t2, pid=7), run_stamp(t1, pid=40000)])[-1] == run_stamp(t2, pid=7)


def test_two_processes_started_together_get_different_run_dirs():
    code = "from wattwise.utils.run_dirs import check_writable_dir, run_stamp; print(run_stamp())"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        for _ in "ab"
    ]
    stamps = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert stamps[0] != stamps[1] and all(s[:8].count("-") == 2 for s in stamps)
