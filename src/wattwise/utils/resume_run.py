"""`resume=<run dir>`: continue a run with the config it was started with, from its newest checkpoint.

The run dir holds what is needed: `.hydra/overrides.yaml` (the command line that started it) and
its checkpoints. `python train.py resume=<run dir> [overrides]` becomes
`python train.py <its overrides> [overrides] ckpt_path=<newest checkpoint>`, before Hydra reads the
command line: overrides given now replace the saved ones of the same key (e.g. a longer
`trainer.max_epochs`); the saved run dir is not reused (the resumed run gets its own, unless
`hydra.run.dir` is given). The newest checkpoint is the most recent of `checkpoints/last.ckpt` and
the hpc checkpoints a SLURM requeue leaves in the run dir.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from wattwise.utils.errors import ConfigError

RESUME_KEY = "resume"
_NOT_CARRIED = ("ckpt_path", "hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir", RESUME_KEY)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def newest_checkpoint(run_dir: Path) -> Path | None:
    candidates = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    present = [p for p in candidates if p.is_file()]
    return max(present, key=lambda p: p.stat().st_mtime) if present else None


def expand_resume(args: Sequence[str]) -> list[str]:
    """The command line with `resume=<run dir>` replaced by that run's overrides and checkpoint."""
    given = [a for a in args if not a.startswith("-") and _key(a) == RESUME_KEY]
    if not given:
        return list(args)
    if len(given) > 1:
        raise ConfigError("resume= is given twice; pass one run dir")
    run_dir = Path(given[0].split("=", 1)[1]).expanduser()
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise ConfigError(
            f"resume={run_dir} is not a run dir (no .hydra/overrides.yaml). Pass a folder under "
            "outputs/runs/, or resume from a checkpoint file with ckpt_path=<file>"
        )
    ckpt = newest_checkpoint(run_dir)
    if ckpt is None:
        raise ConfigError(f"resume={run_dir} holds no checkpoint to resume from (checkpoints/last.ckpt)")
    from omegaconf import OmegaConf

    rest = [a for a in args if a not in given]
    now_keys = {_key(a) for a in rest if not a.startswith("-")}
    saved = [str(o) for o in OmegaConf.load(overrides_file)]
    kept = [o for o in saved if _key(o) not in _NOT_CARRIED and _key(o) not in now_keys]
    return [*kept, *rest, f"ckpt_path={ckpt}"]
