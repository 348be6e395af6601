"""JSON caches and profiles are parsed, never executed; a malformed one is ignored with one warning.

Each reader gets the same corpus of broken files (not JSON, truncated, binary, another JSON type,
the right format with wrong or infinite values, nesting deep enough to exhaust the parser): the
power and batch-size profiles and the teacher-logit cache say so once and are measured again; a
teacher run's summary.json is skipped; a distillation baseline is refused in one line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from wattwise.methods.batch_size import cache as batch_cache
from wattwise.methods.distill import cache as logit_cache
from wattwise.methods.distill.accounting import read_baseline
from wattwise.methods.distill.teacher import _read_summary
from wattwise.methods.power import profile_cache
from wattwise.utils.errors import ConfigError

BATCH_KEY = {"candidates": [32, 64], "limits_W": None}


def _corpus(valid: dict) -> dict[str, bytes]:
    """Broken variants of a valid cache file, by name."""
    text = json.dumps(valid)
    measurement = valid["measurements"][0]
    return {
        "not_json": b"{'python': True}",
        "truncated": text[: len(text) // 2].encode(),
        "binary": bytes(range(256)),
        "empty": b"",
        "a_list": b"[1, 2, 3]",
        "a_string": b'"measurements"',
        "null": b"null",
        "wrong_values": json.dumps({**valid, "measurements": [{k: "x" for k in measurement}]}).encode(),
        "infinite": json.dumps(
            {**valid, "measurements": [dict.fromkeys(measurement, float("inf"))]}
        ).encode(),
        "measurements_a_string": json.dumps({**valid, "measurements": "x"}).encode(),
        "deep": b"[" * 100_000 + b"]" * 100_000,
    }


def _valid_power() -> dict:
    m = {"power_limit": 200.0, "energy": 10.0, "time": 1.0, "steps": 5}
    return {"wattwise_profile_format": profile_cache.PROFILE_FORMAT, "key": {}, "measurements": [m]}


def _valid_batch() -> dict:
    m = {
        "batch_size": 32,
        "steps": 4,
        "samples": 128,
        "energy_J": 1.0,
        "time_s": 0.5,
        "peak_memory_bytes": None,
        "oom": False,
        "limit_W": None,
    }
    return {
        "wattwise_batch_profile_format": batch_cache.PROFILE_FORMAT,
        "key": BATCH_KEY,
        "measurements": [m, {**m, "batch_size": 64}],
    }


READERS = {
    "power": (_valid_power, lambda p: profile_cache.load_cached(p)),
    "batch_size": (_valid_batch, lambda p: batch_cache.load_cached(p, BATCH_KEY)),
}
CASES = [(reader, name) for reader, (valid, _) in READERS.items() for name in _corpus(valid())]


@pytest.mark.parametrize(("reader", "name"), CASES)
def test_a_malformed_profile_is_ignored_with_one_warning(tmp_path, caplog, reader, name):
    valid, load = READERS[reader]
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(valid()))
    assert load(path) is not None  # the valid file is read: the corpus breaks only what it names
    path.write_bytes(_corpus(valid())[name])
    with caplog.at_level(logging.WARNING):
        assert load(path) is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "Ignoring" in warnings[0].getMessage(), [r.getMessage() for r in warnings]


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04truncated", "tensors in a list"])
def test_a_damaged_logit_cache_is_rebuilt_with_one_warning(tmp_path, caplog, content):
    path = tmp_path / "teacher-logits.pt"
    if isinstance(content, str):
        torch.save([torch.zeros(3)], path)
    else:
        path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert logit_cache.load(path) is None
    assert sum(r.levelno >= logging.WARNING for r in caplog.records) == 1


@pytest.mark.parametrize("content", [b"[1, 2]", b"null", b"{bad", b"\xff\xfe"])
def test_a_malformed_summary_is_skipped_or_refused_in_one_line(tmp_path, content):
    (tmp_path / "summary.json").write_bytes(content)
    assert _read_summary(tmp_path) is None  # a teacher's cost is then unknown, not a crash
    with pytest.raises(ConfigError) as err:
        read_baseline(str(tmp_path))
    assert "callbacks.distill.baseline" in str(err.value) and "\n" not in str(err.value)


def test_the_readers_never_unpickle(tmp_path):
    """A JSON reader given a pickle (what a cache file swapped for an exploit would be) only fails."""
    marker = tmp_path / "pwned"
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "profile.json"
    path.write_bytes(pickle.dumps(Payload()))
    assert profile_cache.load_cached(path) is None
    assert batch_cache.load_cached(path, BATCH_KEY) is None
    assert _read_summary(Path(path).parent) is None
    assert not marker.exists()


def test_a_cifar_batch_is_read_without_running_its_pickle(tmp_path):
    """data/cifar10.py reads the python batches with an unpickler that builds numpy arrays only."""
    import os
    import pickle

    import numpy as np

    from wattwise.data.cifar10 import _read_batch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    good, evil = tmp_path / "data_batch_1", tmp_path / "data_batch_2"
    data = np.zeros((2, 3 * 32 * 32), dtype=np.uint8)
    good.write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=2))
    evil.write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2], b"x": Payload()}, protocol=2))
    x, y = _read_batch(good)
    assert x.shape == (2, 3, 32, 32) and list(y) == [1, 2]
    with pytest.raises(ConfigError) as err:
        _read_batch(evil)
    assert "posix.system" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
