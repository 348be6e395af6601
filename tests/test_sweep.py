"""Sweeps: Hydra multirun (one summary per job, failed jobs reported, W&B group), the Optuna
energy-vs-accuracy search (sqlite storage, resumes), the launcher configs, and `compare` on real sweeps.

Exit code of a sweep with a failed job (decision, tested below): with the default basic launcher
every job runs, then the sweep exits non-zero (Hydra's "Error executing job with overrides: ..."),
so scripts and CI notice; the failure is also in that job's summary.json and in `compare`. The
Optuna search instead records a failed trial as FAIL and goes on (`max_failure_rate: 1.0`): a
search is expected to hit bad corners, and exits 0.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR, ROOT, compose_cfg, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from wattwise.compare import compare
from wattwise.methods import registry
from wattwise.sweep import direction, sqlite_url
from wattwise.sweeper import plan_jobs, variant_label
from wattwise.train import train
from wattwise.utils.errors import ConfigError

TESTS = Path(__file__).resolve().parent
SMALL_CLI = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "+trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
    "energy=estimate",
]
CRASH = "+callbacks.crash._target_=crash_callback.CrashMidFit"  # tests/crash_callback.py
# the sweep's jobs must import tests/crash_callback.py
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}


def _summaries(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("summary.json"))]


def _compose_hydra(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


# ---------------------------------------------------------------- configs (fast)


def test_launcher_configs_compose():
    cfg = _compose_hydra("hydra/launcher=joblib_cpu")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the slurm extra is not installed")
    cfg = _compose_hydra("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.partition == "gpu"
    cfg = _compose_hydra()
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")  # sequential by default


def test_energy_pareto_config():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs pip install -e '.[sweep]'")
    from hydra.utils import instantiate

    cfg = _compose_hydra("hparams_search=energy_pareto")
    # the monitored metric's test counterpart (test/acc for the bundled classifier), maximized
    assert list(cfg.optimized_metric) == ["auto", "energy/total_J"] and cfg.monitor == "val/acc"
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert list(instantiate(sweeper.direction)) == ["maximize", "minimize"]
    assert sweeper.sampler._target_ == "optuna.samplers.NSGAIISampler"
    assert sweeper.storage._target_ == "wattwise.sweep.sqlite_url" and sweeper.n_jobs == 1
    assert {"optim", "model.optimizer.lr", "data.batch_size", "trainer.max_epochs"} <= set(sweeper.params)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    # the distributions Optuna will draw from: whole epochs and batch sizes, a log-uniform lr
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import CategoricalDistribution, IntUniformDistribution, LogUniformDistribution

    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    assert not fixed
    assert space["trainer.max_epochs"] == IntUniformDistribution(3, 15)
    assert space["data.batch_size"] == CategoricalDistribution((32, 64, 128, 256))
    assert space["model.optimizer.lr"] == LogUniformDistribution(0.0003, 0.01)
    assert "[]" in space["optim"].choices and "[amp,prune]" in space["optim"].choices
    assert "%f" in OmegaConf.to_container(cfg.hydra.sweep)["dir"]  # two sessions never share a dir


def test_energy_pareto_direction_follows_the_monitor():
    """A loss is minimized: the first objective's direction follows monitor/mode, decided before any trial."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs pip install -e '.[sweep]'")
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    def directions(*overrides: str) -> list[str]:
        return list(
            instantiate(_compose_hydra("hparams_search=energy_pareto", *overrides).hydra.sweeper.direction)
        )

    assert directions("monitor=val/loss") == ["minimize", "minimize"]
    assert directions("monitor=val/mae") == ["minimize", "minimize"]
    assert directions("monitor=val/r2") == ["maximize", "minimize"]
    assert directions("monitor=val/score_x", "mode=min") == ["minimize", "minimize"]
    with pytest.raises(InstantiationException, match="monitor=auto is chosen only inside one"):
        directions("monitor=auto")
    with pytest.raises(InstantiationException, match="cannot tell whether val/thing should rise or fall"):
        directions("monitor=val/thing")


def test_direction_from_monitor_and_mode():
    assert direction("val/acc") == "maximize" and direction("val/loss") == "minimize"
    assert direction("val/loss", "max") == "maximize" and direction("auto", "min") == "minimize"
    with pytest.raises(ConfigError, match="monitor=auto is chosen only inside one"):
        direction("auto", "auto")
    with pytest.raises(ConfigError, match="mode must be min, max or auto"):
        direction("val/loss", "lowest")


def test_energy_pareto_searches_only_options_that_exist():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs pip install -e '.[sweep]'")
    existing = set(registry.option_names())
    text = _compose_hydra("hparams_search=energy_pareto").hydra.sweeper.params.optim
    inner = text[text.index("(") + 1 : text.rindex(")")]
    named = {
        name.strip() for item in inner.split("]") for name in item.strip(", [").split(",") if name.strip()
    }
    assert named <= existing, f"energy_pareto searches options that do not exist: {sorted(named - existing)}"
    assert set(registry.compared_method_names()) <= named and "green" in named  # read from the registry


def test_sqlite_url_creates_the_folder(tmp_path):
    url = sqlite_url(str(tmp_path / "a" / "b" / "study.db"))
    assert url == f"sqlite:///{tmp_path}/a/b/study.db" and (tmp_path / "a" / "b").is_dir()


def test_comparison_sweep_plan_interleaves_seeds_and_rotates_the_order():
    axes = [["optim=[]", "optim=[amp]", "optim=[prune]"], ["trainer.max_epochs=2"]]
    jobs = plan_jobs(axes, seeds=[0, 1, 2])
    assert len(jobs) == 9

    def field(job, key):
        return next(o.partition("=")[2] for o in job if o.partition("=")[0] == key)

    order = [(field(j, "seed"), field(j, "optim"), field(j, "sweep.position")) for j in jobs]
    assert order == [
        ("0", "[]", "0"), ("0", "[amp]", "1"), ("0", "[prune]", "2"),  # A B C
        ("1", "[amp]", "0"), ("1", "[prune]", "1"), ("1", "[]", "2"),  # B C A
        ("2", "[prune]", "0"), ("2", "[]", "1"), ("2", "[amp]", "2"),  # C A B
    ]  # fmt: skip
    assert all("trainer.max_epochs=2" in j and "sweep.if_not_applicable=skip" in j for j in jobs)
    assert {field(j, "sweep.variant") for j in jobs} == {"'none'", "'amp'", "'prune'"}
    assert all(not any(o.startswith("sweep.if_not") for o in j) for j in plan_jobs(axes, [5], None))
    # several swept keys: one variant per combination, labelled as compare labels it
    two = plan_jobs([["optim=[]", "optim=[prune,amp]"], ["model=mlp", "model=cnn"]], [7])
    assert [field(j, "sweep.variant") for j in two] == [
        "'none model=mlp'", "'none model=cnn'", "'amp+prune model=mlp'", "'amp+prune model=cnn'"
    ]  # fmt: skip
    assert variant_label(["optim=[]"]) == "none" and variant_label([]) == "none"


def test_comparison_sweeper_config_composes():
    cfg = _compose_hydra("hydra/sweeper=compare")
    assert cfg.hydra.sweeper._target_.endswith("compare_sweeper.CompareSweeper")
    assert cfg.hydra.sweeper.seeds == 3 and cfg.hydra.sweeper.if_not_applicable == "skip"
    assert cfg.sweep.variant is None and cfg.warmup == "auto"
    # the sweeper's keys stay out of the job's name (the W&B run name); the seed stays in
    excluded = set(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert {
        "sweep.variant",
        "sweep.position",
        "sweep.if_not_applicable",
    } <= excluded and "seed" not in excluded


# ---------------------------------------------------------------- in-process multirun jobs (fast)


def test_parallel_launcher_is_recorded_and_warned(tmp_path, caplog):
    cfg = compose_cfg(tmp_path, ["hydra/launcher=joblib_cpu", "hydra.mode=MULTIRUN", "energy=estimate"])
    with caplog.at_level(logging.WARNING, logger="wattwise.sweep"):
        train(cfg)
    s = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert s["launcher"] == {"launcher": "joblib", "parallel_jobs": 2}
    assert any("2 jobs run in parallel" in r.getMessage() for r in caplog.records)
    assert "shared" in compare(Path(cfg.paths.output_dir), make_plot=False)["table"]
    GlobalHydra.instance().clear()


def test_config_error_in_a_sweep_fails_the_job_not_the_sweep(tmp_path):
    """A bad value in one job raises (Hydra marks the job failed and runs the rest) instead of exiting."""
    cfg = compose_cfg(tmp_path, ["hydra.mode=MULTIRUN", "data.batch_size=0"])
    with pytest.raises(ConfigError, match="data.batch_size must be a positive integer"):
        train(cfg)
    GlobalHydra.instance().clear()
    proc = run_cli(["data.batch_size=0", f"hydra.run.dir={tmp_path}/single"], cwd=tmp_path)
    assert proc.returncode == 2  # a single run still stops with one line and exit code 2
    assert proc.stderr.strip().splitlines() == [
        "wattwise: error: data.batch_size must be a positive integer, got 0. Try data.batch_size=64."
    ]


def test_warm_up_runs_once_before_the_first_window_and_data_is_set_up_before_it(tmp_path, monkeypatch):
    """In a multirun, the first job's measured window opens after a one-time warm-up fit and after
    the data set-up; the next identical job does not warm up again."""
    from wattwise import train as train_module
    from wattwise import warmup
    from wattwise.energy import meter

    events: list[str] = []
    monkeypatch.setattr(warmup, "_warmed", set())
    real_fit = warmup._fit_briefly
    monkeypatch.setattr(warmup, "_fit_briefly", lambda cfg: (events.append("warm-up"), real_fit(cfg)))
    real_begin = meter.EnergyMeter.begin

    def begin(self, key):
        job = max(i for i, e in enumerate(events) if e.startswith("job "))
        if key == "wattwise.segment" and "window opens" not in events[job:]:  # its first segment
            events.append("window opens")
        return real_begin(self, key)

    monkeypatch.setattr(meter.EnergyMeter, "begin", begin)
    real_build = train_module.build

    def build(cfg):
        parts = real_build(cfg)
        setup = parts["datamodule"].setup
        parts["datamodule"].setup = lambda stage=None: (
            events.append(f"data setup {getattr(stage, 'value', stage)}"),
            setup(stage),
        )[1]
        return parts

    monkeypatch.setattr(train_module, "build", build)
    for job in range(2):
        cfg = compose_cfg(tmp_path / str(job), ["hydra.mode=MULTIRUN", "energy=estimate"])
        events.append(f"job {job}")
        train(cfg)
        GlobalHydra.instance().clear()
    fit_windows = [e for e in events if e != "data setup test"]
    assert fit_windows == [
        "job 0", "warm-up", "data setup fit", "window opens", "job 1", "data setup fit", "window opens"
    ]  # fmt: skip


def test_warm_up_setting(monkeypatch):
    from wattwise import sweep
    from wattwise.warmup import wanted

    def cfg(warmup, **trainer):
        return OmegaConf.create({"warmup": warmup, "trainer": {"devices": 1, **trainer}})

    assert wanted(cfg(True)) and not wanted(cfg(False))
    monkeypatch.setattr(sweep, "in_multirun", lambda: False)
    assert not wanted(cfg("auto"))  # auto: only in multiruns
    monkeypatch.setattr(sweep, "in_multirun", lambda: True)
    assert wanted(cfg("auto"))
    assert not wanted(cfg(True, devices=2, strategy="ddp")) and not wanted(cfg(True, num_nodes=2))


@pytest.mark.slow
def test_identical_jobs_pay_no_one_time_cost_inside_their_energy(tmp_path):
    """Two identical jobs in one fresh process, as a multirun runs them: with the warm-up no job
    imports a module inside its energy window; without it the first job does (what made position 0
    cost more), so this check can fail. Module imports count, not seconds: no timing involved."""
    probe = TESTS / "position_probe.py"
    small = [*SMALL_CLI, "data=digits", "model=mlp", "logger=none", "cpu_threads=1"]
    found = {}
    for warmup in ("true", "false"):
        proc = subprocess.run(
            [sys.executable, str(probe), str(tmp_path / warmup), "2", warmup, *small],
            capture_output=True, text=True, timeout=240, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        found[warmup] = json.loads(proc.stdout.split("PROBE ", 1)[1])
    assert found["true"] == [[], []]
    assert found["false"][0] and found["false"][1] == []


# ---------------------------------------------------------------- real sweeps (slow)


@pytest.mark.slow
def test_multirun_then_compare_and_wandb_group(tmp_path):
    """Two jobs -> two summaries -> compare's table, CSV and PNG; both W&B runs in one group."""
    from wandb_offline import find_run_files, read_run

    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", "logger=many", "model=mlp,cnn", "optim=[]", *SMALL_CLI, f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        env={"WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = _summaries(sweep)
    assert len(summaries) == 2 and all(s["status"] == "completed" for s in summaries)
    assert all(
        s["optim"] == [] and s["launcher"] == {"launcher": "basic", "parallel_jobs": 1} for s in summaries
    )

    result = compare(sweep)
    assert len(result["runs"]) == 2 and sum(r.pareto for r in result["runs"]) >= 1
    assert "model=mlp" in result["table"] and "model=cnn" in result["table"]
    assert len(result["csv"].read_text().strip().splitlines()) == 3  # header + 2 runs
    assert result["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    runs = [read_run(f) for f in find_run_files(sweep)]
    assert len(runs) == 2 and all(r["exited"] for r in runs)
    groups = {r["run"]["group"] for r in runs}
    assert len(groups) == 1 and groups.pop()
    assert all(r["config"]["optim_set"] == "none" for r in runs)  # a parallel-coordinates axis
    by_name = {r["run"]["name"]: r for r in runs}
    for s in summaries:
        run = next(r for name, r in by_name.items() if s["overrides"][1] in name)
        assert run["summary"]["energy/total_J"] == pytest.approx(s["energy/total_J"])
        assert run["summary"]["test/acc"] == pytest.approx(s["test/acc"])


@pytest.mark.slow
def test_crashing_job_is_reported_failed_and_the_others_run(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", CRASH, "+callbacks.crash.crash=true,false", *SMALL_CLI, f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        env=ENV,
    )
    # every job ran; the sweep then exits non-zero and names the failed job
    assert proc.returncode != 0
    assert "Error executing job with overrides" in proc.stderr and "crash.crash=True" in proc.stderr
    by_status = {s["status"]: s for s in _summaries(sweep)}
    assert set(by_status) == {"failed", "completed"}
    assert "deliberate crash" in by_status["failed"]["error"]
    assert by_status["completed"]["test/acc"] >= 0

    result = compare(sweep, make_plot=False)
    failed = [r for r in result["runs"] if r.status == "failed"]
    assert len(failed) == 1 and not failed[0].pareto
    assert (
        "[failed]" in result["table"] and "RuntimeError: crash_callback: deliberate crash" in result["table"]
    )


@pytest.mark.slow
def test_multirun_over_option_sets(tmp_path):
    options = sorted(p.stem for p in (CONF_DIR / "optim").glob("*.yaml"))[:2]
    if len(options) < 2:
        pytest.skip(
            f"needs two options in conf/optim/ to sweep over, found {options or 'none'} on this branch"
        )
    a, b = options
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", f"optim=[],[{a}],[{a},{b}]", *SMALL_CLI, f"hydra.sweep.dir={sweep}"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(map(tuple, (s["optim"] for s in _summaries(sweep)))) == sorted([(), (a,), (a, b)])
    labels = {r.optim_label for r in compare(sweep, make_plot=False)["runs"]}
    assert labels == {"none", a, f"{a}+{b}"}


@pytest.mark.slow
def test_optuna_search_with_sqlite_resumes(tmp_path):
    """Two sessions of one study: the second loads the first's trials from sqlite and adds its own;
    a trial that crashes is recorded as FAIL and the search goes on."""
    optuna = pytest.importorskip("optuna", reason="needs pip install -e '.[sweep]'")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs pip install -e '.[sweep]'")
    search = ["hparams_search=energy_pareto", "~hydra.sweeper.params.optim", *SMALL_CLI]
    first = run_cli([*search, "hydra.sweeper.n_trials=2"], cwd=tmp_path, env=ENV)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli([*search, "hydra.sweeper.n_trials=1", CRASH], cwd=tmp_path, env=ENV)
    assert second.returncode == 0, second.stderr[-3000:]  # a failed trial does not fail the search

    db = tmp_path / "outputs" / "optuna" / "energy_pareto.db"
    study = optuna.load_study(study_name="energy_pareto", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert 1 <= len(study.best_trials) <= 2

    sessions = sorted(p for p in (tmp_path / "outputs" / "optuna" / "energy_pareto").iterdir() if p.is_dir())
    assert len(sessions) == 2 and all((p / "optimization_results.yaml").is_file() for p in sessions)
    # what Optuna stored is what the runs wrote
    stored = sorted(v for t in study.trials[:2] for v in t.values)
    written = sorted(v for s in _summaries(sessions[0]) for v in (s["test/acc"], s["energy/total_J"]))
    assert stored == pytest.approx(written)
    result = compare(sessions[0].parent)
    assert sorted(r.status for r in result["runs"]) == ["completed", "completed", "failed"]
    assert "deliberate crash" in result["table"] and result["png"].is_file()


@pytest.mark.slow
def test_comparison_sweep_skips_a_method_that_does_not_apply_and_exits_0(tmp_path):
    """`power` cannot act on a CPU machine: in a comparison sweep it steps aside (skipped, with its
    reason, in summary.json, compare and W&B) and the sweep exits 0; every job records its variant,
    seed and position, in summary.json and in its W&B config; compare's table goes to W&B too."""
    from wandb_offline import find_run_files, read_run

    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", "hydra/sweeper=compare", "hydra.sweeper.seeds=2", "optim=[],[power]", "logger=wandb",
         *SMALL_CLI, f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        env={"WANDB_MODE": "offline"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = {(s["seed"], s["position"]): s for s in _summaries(sweep)}
    assert sorted(summaries) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [summaries[k]["variant"] for k in sorted(summaries)] == ["none", "power", "power", "none"]
    for s in summaries.values():
        assert s["status"] == "completed"
        if s["variant"] == "power":
            assert s["power/status"] == "skipped" and s["power/skipped"]
    assert "2 skipped" in proc.stdout and "skipped (power: " in proc.stdout  # the table at the sweep's end
    result = compare(sweep, make_plot=False)
    recorded = {
        str(i): json.loads((sweep / str(i) / "summary.json").read_text())["variant"] for i in range(4)
    }
    assert {r.name: r.variant for r in result["runs"]} == recorded  # compare's label is the recorded one
    verdicts = {v.label: v.verdict for v in result["variants"]}
    assert verdicts["none"] == "baseline" and verdicts["power"].startswith("skipped (power: ")

    runs = [read_run(f) for f in find_run_files(sweep)]
    jobs = [r for r in runs if r["run"]["name"] != "compare"]
    assert len(jobs) == 4 and len({r["run"]["group"] for r in runs}) == 1  # the compare run joins the group
    configs = sorted((r["config"]["seed"], r["config"]["position"], r["config"]["variant"]) for r in jobs)
    assert configs == [(0, 0, "none"), (0, 1, "power"), (1, 0, "power"), (1, 1, "none")]
    (table_run,) = [f for f in find_run_files(sweep) if read_run(f)["run"]["name"] == "compare"]
    table_file = next(table_run.parent.glob("files/media/table/compare/variants_*.table.json"))
    logged = json.loads(table_file.read_text())
    rows = {row[0]: dict(zip(logged["columns"], row)) for row in logged["data"]}
    assert rows["power"]["verdict"] == verdicts["power"] and rows["none"]["verdict"] == "baseline"


@pytest.mark.slow
def test_comparison_sweep_still_fails_on_a_failing_job(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", "hydra/sweeper=compare", "hydra.sweeper.seeds=1", CRASH, "+callbacks.crash.crash=true,false",
         "logger=none", *SMALL_CLI, f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        env=ENV,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "deliberate crash" in proc.stderr
    assert "1 failed or interrupted" in proc.stdout  # compare's table came first
    assert sorted(s["status"] for s in _summaries(sweep)) == ["completed", "failed"]
