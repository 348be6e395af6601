"""The job's own energy from SLURM's accounting (`sacct`), to show next to wattwise's figure.

Clusters with an energy-gathering plugin (acct_gather_energy: RAPL, IPMI, NVML...) record
`ConsumedEnergyRaw` (joules) per job and step; many clusters record nothing (empty or 0). It is read
once, at the end of the fit, with a bounded timeout: a slow or missing `sacct` costs at most that.
The job may still be running, so the figure is what accounting had gathered by then.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SlurmEnergy:
    job_id: str
    consumed_J: float | None  # None: the cluster records no energy for this job
    note: str


def parse_consumed_energy(text: str) -> float | None:
    """sacct's ConsumedEnergyRaw lines (job, then steps) -> the largest figure (the job's total), or None."""
    values = []
    for line in text.splitlines():
        field = line.strip().split("|")[0]
        try:
            values.append(float(field))
        except ValueError:
            continue
    best = max(values, default=0.0)
    return best if best > 0 else None


def read_slurm_energy(
    job_id: str | None = None,
    timeout_s: float = 5.0,
    run: Callable[..., Any] = subprocess.run,
) -> SlurmEnergy | None:
    """This job's energy as SLURM accounts it; None outside SLURM (no SLURM_JOB_ID)."""
    job_id = job_id or os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    cmd = ["sacct", "-j", str(job_id), "--format=ConsumedEnergyRaw", "--noheader", "--parsable2"]
    try:
        done = run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        return SlurmEnergy(str(job_id), None, "sacct not found")
    except subprocess.TimeoutExpired:
        return SlurmEnergy(str(job_id), None, f"sacct did not answer within {timeout_s:g} s")
    if done.returncode != 0:
        first = (done.stderr or "").strip().splitlines()[:1]
        return SlurmEnergy(str(job_id), None, f"sacct failed: {first[0] if first else done.returncode}")
    value = parse_consumed_energy(done.stdout)
    note = "sacct ConsumedEnergyRaw" if value is not None else "the cluster records no energy for this job"
    return SlurmEnergy(str(job_id), value, note)
