"""Shared fixtures: compose the real configs into a tmp dir and shrink the run to a few batches."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from wattwise.utils.compose import compose_run_config

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "src" / "wattwise" / "conf"
sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (fake_gpu, wandb_offline)

os.environ.setdefault("MPLCONFIGDIR", "/tmp/wattwise-mpl")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def _cache_parsed_config_files() -> None:
    """Parse each Hydra config file once per test process (keyed by path and mtime).

    A test composes the real configs hundreds of times, and half of a short run's time went into
    Hydra reading and parsing the same YAML files again. Only the parse is cached: Hydra still
    builds its defaults list and composes each config afresh, from a copy of the parsed file.
    """
    import copy

    from hydra._internal.sources_registry import SourcesRegistry
    from hydra.core.plugins import Plugins
    from hydra.plugins.config_source import ConfigResult
    from omegaconf import OmegaConf

    Plugins.instance()  # its scan re-imports the config-source modules: patch the classes it registered
    FileConfigSource = SourcesRegistry.instance().resolve("file")  # noqa: N806
    ImportlibResourcesConfigSource = SourcesRegistry.instance().resolve("pkg")  # noqa: N806

    original = FileConfigSource.load_config
    parsed: dict[str, tuple[int, Any, dict, str, str]] = {}

    def load_config(self: Any, config_path: str) -> Any:
        full = os.path.realpath(os.path.join(self.path, self._normalize_file_name(config_path)))
        try:
            stamp = os.stat(full).st_mtime_ns
        except OSError:
            return original(self, config_path)
        hit = parsed.get(full)
        if hit is None or hit[0] != stamp:
            result = original(self, config_path)
            data = OmegaConf.to_container(result.config, resolve=False)
            parsed[full] = (stamp, data, dict(result.header), result.path, result.provider)
            return result
        _, data, header, path, provider = hit
        return ConfigResult(
            config=OmegaConf.create(copy.deepcopy(data)), path=path, provider=provider, header=dict(header)
        )

    FileConfigSource.load_config = load_config

    packaged = ImportlibResourcesConfigSource.load_config  # Hydra's own configs: fixed for the process
    packaged_parsed: dict[tuple[str, str], tuple[Any, dict, str, str]] = {}

    def load_packaged(self: Any, config_path: str) -> Any:
        key = (str(self.path), config_path)
        if key not in packaged_parsed:
            result = packaged(self, config_path)
            data = OmegaConf.to_container(result.config, resolve=False)
            packaged_parsed[key] = (data, dict(result.header), result.path, result.provider)
            return result
        data, header, path, provider = packaged_parsed[key]
        return ConfigResult(
            config=OmegaConf.create(copy.deepcopy(data)), path=path, provider=provider, header=dict(header)
        )

    ImportlibResourcesConfigSource.load_config = load_packaged


_cache_parsed_config_files()

# A few batches per stage: enough to exercise every hook, cheap enough for CI.
SMALL = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "+trainer.enable_progress_bar=false",
    "++callbacks.progress_bar=null",
    "trainer.log_every_n_steps=1",
    "cpu_threads=1",  # the auto policy is tested on its own (tests/test_threads.py)
    "++callbacks.energy_report.plot=false",  # ~0.5 s of matplotlib per run; tested in tests/test_forecast.py
]


# Tests pin their data and net (digits + MLP: small, fast, well understood) unless they choose one,
# so the shipped default (train.yaml) can change without changing what each test checks; the
# default itself is run by the CLI tests (tests/test_train.py).
PINNED_GROUPS = {"data": "digits", "model": "mlp"}


def pinned(overrides: Sequence[str]) -> list[str]:
    chosen = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    if "experiment" in chosen:  # a recipe chooses its own data and model
        return []
    return [f"{g}={v}" for g, v in PINNED_GROUPS.items() if g not in chosen]


def compose_cfg(tmp_path: Path, overrides: Sequence[str] = (), small: bool = True) -> DictConfig:
    """The real conf/ composed with `overrides`, writing into tmp_path; HydraConfig is set as in a run."""
    overrides = [*pinned(overrides), *(SMALL if small else []), *overrides]
    return compose_run_config(overrides, tmp_path / "run", root=tmp_path)


def train_in_process(
    tmp_path: Path, overrides: Sequence[str] = (), save_config: bool = False
) -> tuple[dict[str, Any], Path]:
    """compose_cfg, then `train(cfg)` in this process: (summary.json's contents, the run dir).

    `save_config` also writes the run's `.hydra/config.yaml`, as a `train.py` run does (what a
    later run that reads this one, e.g. a distillation teacher, rebuilds it from)."""
    import json

    from omegaconf import OmegaConf

    from wattwise.train import train

    cfg = compose_cfg(tmp_path, overrides)
    run_dir = Path(cfg.paths.output_dir)
    if save_config:
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    try:
        train(cfg)
    finally:
        GlobalHydra.instance().clear()
    return json.loads((run_dir / "summary.json").read_text()), run_dir


LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "wattwise", "zeus")


@pytest.fixture(autouse=True)
def library_log_levels_restored():
    """The benchmarks quiet these loggers when they run (bench/*.py quiet()); a test that runs one in
    this process must not silence wattwise's warnings for the tests after it in the same worker."""
    import logging

    levels = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(autouse=True)
def no_native_bf16(monkeypatch):
    """The CPU has no native bf16 in every test, on every machine (last round `make test` failed on
    a CPU with it): amp's `auto` keeps 32-true. Tests of the bf16 branch set it to True themselves."""
    from wattwise.methods.amp import callback as precision

    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)


@pytest.fixture(autouse=True)
def no_rapl(monkeypatch):
    """Tests never read the host's RAPL counters: Zeus sees no CPU to measure, on every machine, so
    `energy=auto` on the CPU is the estimate everywhere. Tests of the RAPL branch replace the Zeus
    monitor with a fake one (tests/test_energy.py)."""
    from wattwise.energy import meter

    real = meter._make_zeus_monitor

    def without_rapl(gpu_index):
        monitor = real(gpu_index)
        if monitor is not None:  # None: no GPU to read and no RAPL here, Zeus not even imported
            monitor.cpu_indices = []
        return monitor

    monkeypatch.setattr(meter, "_make_zeus_monitor", without_rapl)


@pytest.fixture(autouse=True)
def no_live_grid_or_slurm(monkeypatch):
    """No test asks Electricity Maps with the host's key or the host's SLURM job's sacct: the tests of
    those start their own fake provider and fake sacct (tests/test_carbon.py)."""
    monkeypatch.delenv("ELECTRICITYMAPS_API_KEY", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


@pytest.fixture(autouse=True)
def power_limits_stay_as_found(monkeypatch):
    """Tests never change a real GPU's power limit: +optim=power runs dry everywhere, unless a test
    lifts this because it drives a fake GPU (tests/test_power_limit.py)."""
    monkeypatch.setenv("WATTWISE_POWER_DRY_RUN", "1")


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def _make(*overrides: str, small: bool = True) -> DictConfig:
        return compose_cfg(tmp_path, overrides, small=small)

    yield _make
    GlobalHydra.instance().clear()


def load_bench_module(name: str):
    """bench/<name>.py as a module (bench/ is scripts, not a package), loaded once per session."""
    import importlib.util

    key = f"wattwise_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def cpu_trainer(tmp_path: Path, *callbacks: Any, epochs: int, checkpoint: bool, **extra: Any) -> Any:
    """A small one-CPU Trainer for method tests: 2 training and 1 validation batch an epoch, no logger,
    bar or model summary; `extra` goes to the Trainer (e.g. limit_test_batches)."""
    import lightning as L

    return L.Trainer(
        max_epochs=epochs,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=list(callbacks),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=checkpoint,
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        **extra,
    )


def run_cli(args: Sequence[str], cwd: Path, timeout: int = 240, env: dict | None = None, pin: bool = True):
    """Run `python train.py ...` as a user would; returns the CompletedProcess.

    Like compose_cfg, it pins digits + MLP unless the arguments choose; `pin=False` runs the
    shipped default."""
    import subprocess

    plain = [a for a in args if not a.startswith("-")]
    args = [*args, *(pinned(plain) if pin else [])]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def run_two_gloo_ranks(module: str, out_dir: Path, timeout: int = 240) -> None:
    """Run `<module>.ddp_child(rank, 2, init_file, out_dir)` (a tests/ module) in two processes that
    meet in one gloo group through a file in `out_dir`; both must exit 0. The children write their
    findings into `out_dir`, where the test reads them."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    code = f"import sys, {module} as m; m.ddp_child(int(sys.argv[1]), 2, sys.argv[2], sys.argv[3])"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(rank), str(out_dir / "gloo-init"), str(out_dir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(2)
    ]
    outs = [p.communicate(timeout=timeout)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
