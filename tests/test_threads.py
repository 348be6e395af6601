"""The CPU thread policy: every branch with the machine's facts pinned, never read from the host."""

from __future__ import annotations

import pytest
import torch

from wattwise.utils import threads
from wattwise.utils.errors import ConfigError
from wattwise.utils.threads import choose_threads


@pytest.mark.parametrize(
    ("cores", "busy", "expected"),
    [(2, 0.0, 2), (2, 1.0, 1), (2, 1.9, 1), (2, 3.0, 1), (16, 4.2, 12), (1, 0.0, 1)],
)
def test_auto_uses_the_cores_other_work_leaves_free(cores, busy, expected):
    assert choose_threads("auto", cores=cores, busy_cores=busy, torch_default=cores).threads == expected


def test_an_integer_is_taken_and_null_leaves_torch_alone():
    assert choose_threads(3, cores=2, busy_cores=2.0, torch_default=2).threads == 3
    assert choose_threads(None, cores=2, busy_cores=0.0, torch_default=2).threads is None


def test_omp_num_threads_wins_over_auto():
    choice = choose_threads("auto", cores=8, busy_cores=0.0, torch_default=8, omp_env="4")
    assert choice.threads is None and "OMP_NUM_THREADS=4" in choice.reason


@pytest.mark.parametrize("bad", [0, -2, "many", True])
def test_bad_settings_name_the_key(bad):
    with pytest.raises(ConfigError, match="cpu_threads must be auto, null or a positive integer"):
        choose_threads(bad, cores=2, busy_cores=0.0, torch_default=2)


def test_apply_sets_torch_and_says_why(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda: 1.0)  # one other process keeps a core busy
    try:
        choice = threads.apply_threads("auto")
        assert choice.threads == 1 == torch.get_num_threads() and "1.0 busy" in choice.reason
    finally:
        torch.set_num_threads(before)


def test_the_run_summary_records_the_choice(make_cfg):
    import json
    from pathlib import Path

    from wattwise.train import train

    cfg = make_cfg("cpu_threads=1")
    train(cfg)
    s = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert s["cpu_threads"] == 1 and s["cpu_threads_reason"] == "set by cpu_threads"
