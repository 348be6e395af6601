"""The comparison sweeper (`hydra/sweeper=compare`, what `make sweep` uses): seeds, interleaved, rotated.

    python train.py -m hydra/sweeper=compare 'optim=[],[amp],[prune]'           # 3 seeds: 0, 1, 2
    python train.py -m hydra/sweeper=compare 'optim=[],[amp]' hydra.sweeper.seeds=5
    python train.py -m hydra/sweeper=compare model=mlp,cnn seed=1,7               # these seeds

Hydra's basic sweeper runs the cartesian product in order: each variant's runs back to back, so a
machine that drifts over minutes biases them. This one runs every variant (a combination of the
swept values, the seed aside) once per seed, the seeds one after the other and, within each seed's
round, the variants in an order rotated by one per round (A B C, B C A, C A B), as the benchmark
does. Each job gets `seed=<s>`, `sweep.variant=<label>` and `sweep.position=<place in its round>`
(recorded in summary.json and the W&B config), and `sweep.if_not_applicable=skip`: a method that
does not apply on this machine steps aside (`skipped (reason)` in compare) instead of failing the
sweep. A job that really fails still fails the sweep, after every job has run.

When all jobs have run, it prints `compare`'s table of the sweep dir and, if the runs logged to W&B
(`logger=wandb` or `many`), logs the same table there (a run named `compare` in the sweep's group).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from wattwise.stats import rotated

log = logging.getLogger(__name__)

DEFAULT_SEEDS = 3


def optim_label(value: str) -> str:
    """`[]` -> none, `[prune,amp]` -> amp+prune, `green` -> green (as compare labels runs)."""
    value = value.strip()
    inner = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    names = sorted(v.strip() for v in inner.split(",") if v.strip())
    return "+".join(names) or "none"


def variant_label(swept: Sequence[str]) -> str:
    """The label of a variant from its swept overrides: the methods first, then the other keys."""
    optim = [o.partition("=")[2] for o in swept if o.partition("=")[0].lstrip("+~") == "optim"]
    rest = [o for o in swept if o.partition("=")[0].lstrip("+~") != "optim"]
    return " ".join([optim_label(optim[0]) if optim else "none", *rest])


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def plan_jobs(
    axes: Sequence[Sequence[str]], seeds: Sequence[Any], if_not_applicable: str | None = "skip"
) -> list[list[str]]:
    """Every variant (one value of each axis) once per seed, seed-major, the variants rotated per round.

    `axes`: per override key, its `key=value` strings (one for a fixed value)."""
    swept = [len(a) > 1 for a in axes]
    variants = [list(combo) for combo in itertools.product(*axes)]
    jobs = []
    for round_, seed in enumerate(seeds):
        for position, combo in enumerate(rotated(variants, round_)):
            label = variant_label([o for o, s in zip(combo, swept) if s])
            job = [*combo, f"seed={seed}", f"sweep.variant={_quoted(label)}", f"sweep.position={position}"]
            if if_not_applicable:
                job.append(f"sweep.if_not_applicable={if_not_applicable}")
            jobs.append(job)
    return jobs


def _axes_and_seeds(overrides: Sequence[Any]) -> tuple[list[list[str]], list[str] | None]:
    """Per override key its `key=value` strings (the seed's values apart), from Hydra's parsed overrides."""
    axes, seeds = [], None
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ValueError(f"hydra/sweeper=compare sweeps lists of values, not {override.input_line}")
            values = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            values = [f"{key}={override.get_value_element_as_str()}"]
        if key.lstrip("+~") == "seed":
            seeds = [v.partition("=")[2] for v in values]
        else:
            axes.append(values)
    return axes, seeds


class CompareSweeper(Sweeper):
    """Seeds, interleaving and rotation (see the module docstring), on Hydra's public Sweeper interface."""

    def __init__(
        self,
        seeds: int = DEFAULT_SEEDS,
        if_not_applicable: str | None = "skip",
        compare: bool = True,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        if int(seeds) < 1:
            raise ValueError(f"hydra.sweeper.seeds must be >= 1, got {seeds}")
        self.seeds = int(seeds)
        self.if_not_applicable = if_not_applicable
        self.compare = compare
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.hydra_context: Any = None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def plan(self, arguments: Sequence[str]) -> list[list[str]]:
        """Every job's overrides, in the order they run."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        params = [f"{k}={v}" for k, v in self.params.items()]
        axes, seeds = _axes_and_seeds(parser.parse_overrides([*params, *arguments]))
        return plan_jobs(axes, seeds or list(range(self.seeds)), self.if_not_applicable)

    def sweep(self, arguments: list[str]) -> Any:
        returns = []
        try:
            returns = self._launch_all(arguments)
        finally:
            if self.compare:
                self._compare()
        for batch in returns:
            for r in batch:
                _ = r.return_value  # a failed job fails the sweep, after every job ran and the table
        return returns

    def _launch_all(self, arguments: list[str]) -> list[Any]:
        """Launch the planned jobs in batches (all at once unless max_batch_size), as the basic sweeper."""
        assert self.config is not None and self.launcher is not None
        jobs = self.plan(arguments)
        log.info(
            "hydra/sweeper=compare: %d jobs (variants x seeds, interleaved, rotated per seed)", len(jobs)
        )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        size = len(jobs) if self.max_batch_size in (None, -1) else int(self.max_batch_size)
        returns = []
        for first in range(0, len(jobs), max(size, 1)):
            batch = jobs[first : first + size]
            self.validate_batch_is_legal(batch)
            returns.append(self.launcher.launch(batch, initial_job_idx=first))
        return returns

    def _compare(self) -> None:
        """Print compare's table of the sweep dir; log it to W&B when the runs did."""
        assert self.config is not None
        sweep_dir = str(self.config.hydra.sweep.dir)
        try:
            from wattwise.compare import compare

            result = compare(sweep_dir)
            print(
                f"\n{result['table']}\n\ncompare: {sweep_dir} (python -m wattwise.compare {sweep_dir})",
                flush=True,
            )
            wandb = wandb_settings(self.config)
            if wandb is not None and wandb["mode"] != "disabled":
                from wattwise.compare.wandb_table import log_variant_table

                log_variant_table(
                    result["variants"], folder=sweep_dir, save_dir=sweep_dir, metric=result["metric"], **wandb
                )
        except Exception as err:  # noqa: BLE001 - the jobs' own outcome decides the exit code
            log.warning("hydra/sweeper=compare: could not compare %s: %s", sweep_dir, err)


def wandb_settings(config: Any) -> dict[str, Any] | None:
    """{"project", "mode"} of the W&B logger the sweep's runs used, None when they did not use W&B."""
    loggers = config.get("logger") or {}
    for node in loggers.values():
        target = str(node.get("_target_", "")) if hasattr(node, "get") else ""
        if "wandb" in target.lower():
            return {"project": str(node.get("project") or "wattwise"), "mode": node.get("mode")}
    return None
