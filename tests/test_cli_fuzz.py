"""A bounded, seeded fuzz of the command line: bad input never gives a traceback, a hang or a run dir
that `compare` misreads.

Each case is `python train.py <tiny run> <one or two random overrides>`: a wrong type, a huge or
negative number, an empty string, an unknown key, unicode, or a path to a folder, a missing file, a
truncated checkpoint or a file that is no checkpoint, on keys that take numbers, choices or paths.
Every case must end within its timeout with exit 0 (it trained: summary.json says completed), 2
(one `wattwise: error:` line) or 1 (Hydra's own error for an override it cannot parse or place, not
an error raised while building), never a Python traceback; and
`wattwise.compare` must read each run dir as what it is (completed only when the run completed).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from cli_fork import run_forked
from conftest import SMALL

from wattwise.compare import load_runs

SEED = 25
CASES = 14  # each of the 7 kinds twice (a bounded, seeded fuzz; more cases only cost time)
NUMBER_KEYS = [
    "trainer.max_epochs",
    "data.batch_size",
    "data.eval_batch_size",
    "seed",
    "cpu_threads",
    "energy.grid_gCO2_per_kWh",
    "energy.pue",
    "energy.provider.timeout_s",
    "model.optimizer.lr",
]
CHOICE_KEYS = ["energy.mode", "energy.region", "trust_checkpoint", "test", "optimized_metric"]
PATH_KEYS = ["ckpt_path", "resume", "paths.data_dir", "callbacks.distill.teacher"]
METHOD_KEYS = {  # a method's setting, given with the method switched on
    "early_stop": ["callbacks.early_stop.window", "callbacks.early_stop.budget_J"],
    "prune": ["callbacks.prune.macs_reduction", "callbacks.prune.importance"],
    "amp": ["callbacks.amp.precision"],
}
WRONG = ["abc", "'[1,2]'", "'{a: 1}'", "true", "1.5", "null"]
HUGE_OR_NEGATIVE = ["-1", "-1000000000", "1e308", "-1e308", "99999999999999999999", "0"]
HYDRA_OVERRIDE_ERRORS = ("override_grammar", "Could not override", "Could not append", "Could not find")
ODD_TEXT = ["", "''", "ünïcødé", "'日本語'", "'  '", "a=b", "'€\u200b'"]


def _files(root: Path) -> dict[str, str]:
    """Paths a fuzzed path setting may get: a folder, a missing file and three broken files."""
    root.mkdir(parents=True, exist_ok=True)
    ckpt = root / "real.ckpt"
    torch.save({"state_dict": {"net.w": torch.zeros(64, 64)}, "epoch": 0}, ckpt)
    data = ckpt.read_bytes()
    (root / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (root / "notes.ckpt").write_text("not a checkpoint\n")
    (root / "empty.ckpt").write_bytes(b"")
    (root / "a_dir").mkdir(exist_ok=True)
    names = ["truncated.ckpt", "notes.ckpt", "empty.ckpt", "a_dir", "missing.ckpt"]
    return {n: str(root / n) for n in names}


def _override(rng: random.Random, kind: str, paths: list[tuple[str, str]]) -> list[str]:
    """One random bad override of `kind` (with the method it needs, for a method setting)."""
    if kind == "path":  # (key, file) pairs drawn without repeats: the broken files meet every path key
        key, path = paths.pop()
        extra = ["+optim=distill"] if key.startswith("callbacks.distill") else []
        return [*extra, f"{key}={path}"]
    if kind == "unknown":
        return [rng.choice(["+no_such_key=1", "trainer.no_such=1", "no_such_group=x", "+energy.no_such=2"])]
    if kind == "method":
        method = rng.choice(sorted(METHOD_KEYS))
        key = rng.choice(METHOD_KEYS[method])
        return [f"+optim={method}", f"{key}={rng.choice(WRONG + HUGE_OR_NEGATIVE + ODD_TEXT)}"]
    keys = CHOICE_KEYS if kind == "choice" else NUMBER_KEYS
    pool = {"type": WRONG, "number": HUGE_OR_NEGATIVE, "text": ODD_TEXT, "choice": WRONG + ODD_TEXT}[kind]
    key = rng.choice(keys)
    value = rng.choice(pool)
    if key == "trainer.max_epochs" and value in ("99999999999999999999", "1e308"):
        value = "-5"  # a valid huge epoch count would just train for ages: not a config error
    return [f"{key}={value}"]


def fuzz_cases(tmp_path: Path) -> list[list[str]]:
    """The seeded overrides of each case: every kind in turn, a second one now and then."""
    rng = random.Random(SEED)
    files = _files(tmp_path / "files")
    paths = [(k, f) for k in PATH_KEYS for f in sorted(files.values())]
    rng.shuffle(paths)
    kinds = ["type", "number", "text", "choice", "path", "unknown", "method"]
    cases = []
    for i in range(CASES):
        overrides = _override(rng, kinds[i % len(kinds)], paths)
        if rng.random() < 0.3:
            overrides += _override(rng, rng.choice(kinds[:5]), paths)
        cases.append(overrides)
    return cases


def _check(overrides: list[str], result: dict[str, Any]) -> None:
    shown = f"{overrides}: rc={result['rc']} after {result['seconds']} s\n{result['stderr'][-1500:]}"
    assert not result["timed_out"], shown
    assert "Traceback" not in result["stdout"] + result["stderr"], shown
    assert result["rc"] in (0, 1, 2), shown
    if result["rc"] == 2:
        errors = [ln for ln in result["stderr"].splitlines() if ln.startswith("wattwise: error:")]
        assert len(errors) == 1, shown
    if result["rc"] == 1:  # only Hydra's own answer to an override it cannot parse or place
        assert any(m in result["stderr"] for m in HYDRA_OVERRIDE_ERRORS), shown


def test_fuzzed_overrides_fail_cleanly_and_compare_reads_every_run_dir(tmp_path):
    runs = tmp_path / "runs"
    all_overrides = fuzz_cases(tmp_path)
    cases = [
        {
            "args": [
                "data=digits",
                "model=mlp",
                *SMALL,
                *overrides,
                f"hydra.run.dir={runs / f'case{i:02d}'}",
            ],
            "cwd": str(tmp_path),
            "timeout": 60,
            "out": str(tmp_path / "logs" / f"case{i:02d}"),
        }
        for i, overrides in enumerate(all_overrides)
    ]
    results = run_forked(cases, tmp_path / "fork")
    for overrides, result in zip(all_overrides, results, strict=True):
        _check(overrides, result)
    read = {r.name: r for r in load_runs(runs)} if runs.exists() else {}
    for i, (overrides, result) in enumerate(zip(all_overrides, results, strict=True)):
        run = read.get(f"case{i:02d}")
        completed = run is not None and run.status == "completed"
        assert completed == (result["rc"] == 0), (overrides, result["rc"], run)
    assert sum(r["rc"] == 2 for r in results) >= CASES // 2  # most are config errors, not crashes
    unknown = [r for o, r in zip(all_overrides, results, strict=True) if any("no_such" in x for x in o)]
    assert unknown and all(r["rc"] != 0 for r in unknown)  # a misspelt key never trains silently
