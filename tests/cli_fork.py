"""Many `python train.py ...` runs for the price of one start-up: import wattwise once, fork per run.

Each case runs `wattwise.train.main()` in a forked child, exactly as `train.py` would (its own argv,
cwd and environment, stdout/stderr to files, an uncaught exception printed as Python prints it, the
exit status as the process's), bounded by a timeout after which the child is killed. Imports cost
~5 s on a busy machine, a failing run well under one; the CLI fuzz and trust-boundary tests each
run one of these processes instead of a process per case.

    python tests/cli_fork.py cases.json results.json
    cases: [{"args": [...], "cwd": "...", "env": {...}, "timeout": 60, "out": "<folder for its logs>"}]
    results: [{"rc": int | None, "timed_out": bool, "stdout": str, "stderr": str, "seconds": float}]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _child(case: dict[str, Any]) -> None:
    """In the forked child: become `python train.py <args>` and exit with its status."""
    out = Path(case["out"])
    os.chdir(case["cwd"])
    os.environ.update(case.get("env") or {})
    for fd, name in ((1, "stdout"), (2, "stderr")):
        f = os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.argv = [str(ROOT / "train.py"), *case["args"]]
    code = 0
    try:
        from wattwise.train import main

        main()
    except SystemExit as err:
        if isinstance(err.code, int) or err.code is None:
            code = err.code or 0
        else:
            print(err.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - printed as the interpreter would print it
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _wait(pid: int, timeout: float) -> tuple[int | None, bool]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None, True


def run_all(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run each case in a fork of this process (wattwise already imported); see the module doc."""
    import wattwise.train  # noqa: F401 - imported once, before the forks

    results = []
    for case in cases:
        Path(case["out"]).mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(case)
        rc, timed_out = _wait(pid, float(case.get("timeout", 60)))
        out = Path(case["out"])
        results.append(
            {
                "rc": rc,
                "timed_out": timed_out,
                "stdout": (out / "stdout").read_text(errors="replace") if (out / "stdout").exists() else "",
                "stderr": (out / "stderr").read_text(errors="replace") if (out / "stderr").exists() else "",
                "seconds": round(time.monotonic() - start, 2),
            }
        )
    return results


def run_forked(cases: list[dict[str, Any]], work: Path, env: dict[str, str] | None = None) -> list[dict]:
    """From a test: run `cases` in one `python tests/cli_fork.py` process; its results, in order."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "cases.json").write_text(json.dumps(cases))
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    budget = sum(float(c.get("timeout", 60)) for c in cases) + 120
    proc = subprocess.run(
        [sys.executable, __file__, str(work / "cases.json"), str(work / "results.json")],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=budget,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((work / "results.json").read_text())


if __name__ == "__main__":
    found = run_all(json.loads(Path(sys.argv[1]).read_text()))
    Path(sys.argv[2]).write_text(json.dumps(found))
