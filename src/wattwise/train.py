"""main(cfg): validate, build, fit, test, write summary.json, print the table, return the objective(s).

Whatever happens after the build, `summary.json` is written (status completed,
failed or interrupted) and loggers are closed, so a crashed run still leaves its
figures behind.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from wattwise import warmup
from wattwise.config_dir import CONF_DIR
from wattwise.methods.registry import register_recipes
from wattwise.sweep import in_multirun, launcher_info
from wattwise.utils.errors import ConfigError, OutputError, exit_with_error
from wattwise.utils.run_dirs import register_run_dir_resolvers
from wattwise.utils.safe_load import TRUST_KEY, set_trust, weights_only_for_lightning
from wattwise.utils.secrets import (
    hide_secret_overrides,
    redact,
    redact_overrides,
    restore_secret_overrides,
    scrub_saved_config,
)
from wattwise.utils.summary import save_summary
from wattwise.utils.validate import validate_config

log = logging.getLogger(__name__)

register_recipes()  # +optim=green and the other recipes, built from the registry
register_run_dir_resolvers()  # ${wattwise.run_stamp:} in conf/hydra/default.yaml


def _quiet_known_noise() -> None:
    # In-memory tensor datasets need no loader workers; Lightning's hint is misleading here.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*litlogger.*", category=UserWarning)
    warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")
    # Lightning adds its own console handler; Hydra's root handlers already print (and file) its records.
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            lg = logging.getLogger(name)
            for handler in list(lg.handlers):
                lg.removeHandler(handler)
            lg.propagate = True
    # Zeus warns about amdsmi on every machine without AMD GPUs; the meter reports what it found.
    logging.getLogger("zeus.device.gpu.amd").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage().lower() and "Tip:" not in record.getMessage()
    )


def _without_switched_off(callbacks: dict[str, Any], trainer_cfg: Any) -> dict[str, Any]:
    """Drop the always-on checkpoint and progress-bar callbacks the trainer config switches off.

    Lightning refuses `enable_checkpointing=False` (`enable_progress_bar=False`) beside a
    ModelCheckpoint (a progress bar) in the callbacks, so `trainer.enable_checkpointing=false`
    would otherwise need every `callbacks.*` checkpoint nulled by hand as well.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.callbacks.progress import ProgressBar

    off = []
    if trainer_cfg.get("enable_checkpointing") is False:
        off.append(ModelCheckpoint)
    if trainer_cfg.get("enable_progress_bar") is False:
        off.append(ProgressBar)
    dropped = [k for k, cb in callbacks.items() if isinstance(cb, tuple(off))]
    if dropped:
        log.info("Left out callbacks %s: the trainer config switches them off", ", ".join(dropped))
    return {k: cb for k, cb in callbacks.items() if k not in dropped}


def _choose_monitor(cfg: DictConfig, module: Any, datamodule: Any) -> None:
    """Set the run-wide monitor/mode (utils/monitor.py) and say how it was chosen, in one line."""
    from omegaconf import open_dict

    from wattwise.utils.monitor import resolve

    monitor, mode, why = resolve(cfg, module, datamodule)
    with open_dict(cfg):
        cfg.monitor, cfg.mode = monitor, mode
    log.info("Monitoring %s (%s): %s", monitor, mode, why)


def build(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate datamodule, module, callbacks (ordered by `optim.assemble`), loggers and trainer."""
    from wattwise.methods.assemble import assemble
    from wattwise.utils.instantiate import build_at, build_datamodule, build_dict, build_module
    from wattwise.utils.run_info import command_line_keys

    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg.model, datamodule)
    _choose_monitor(cfg, module, datamodule)  # before any callback reads ${monitor}
    energy = build_at("energy", cfg.energy) if cfg.get("energy") is not None else None
    callbacks = _without_switched_off(build_dict(cfg.get("callbacks"), "callbacks"), cfg.trainer)
    parts = assemble(callbacks, energy, cfg.trainer, command_line_keys())
    loggers = build_dict(cfg.get("logger"), "logger")
    trainer = build_at(
        "trainer",
        cfg.trainer,
        callbacks=parts.callbacks,
        logger=list(loggers.values()) or False,
        **parts.trainer_settings,
    )
    return {
        "datamodule": datamodule,
        "module": module,
        "callbacks": {"energy": energy, **callbacks} if energy is not None else callbacks,
        "methods": parts.methods,
        "loggers": loggers,
        "trainer": trainer,
    }


def _objective(cfg: DictConfig, summary: dict[str, Any]) -> Any:
    names = cfg.get("optimized_metric")
    if names is None:
        return None
    names = list(names) if OmegaConf.is_list(names) else [names]
    names = [_auto_objective(cfg, summary) if n == "auto" else n for n in names]
    values = [summary.get(n) for n in names]
    values = [float("nan") if v is None else float(v) for v in values]
    return values[0] if len(values) == 1 else tuple(values)


def _auto_objective(cfg: DictConfig, summary: dict[str, Any]) -> str:
    """The monitored metric's test counterpart where the run has it (val/acc -> test/acc), else itself."""
    monitor = str(cfg.get("monitor"))
    stage, _, name = monitor.partition("/")
    test_name = f"test/{name}" if stage == "val" and name else monitor
    return test_name if summary.get(test_name) is not None else monitor


def _final_metrics(trainer: Any, fit_metrics: dict[str, Any], test_metrics: dict[str, Any]) -> dict[str, Any]:
    from wattwise.api import figures

    out = {k: v for k, v in fit_metrics.items() if not k.startswith("energy/") and k != "time/train_s"}
    out.update(test_metrics)
    out.update(figures(trainer))  # the monitor's and every method's, as the public API reports them
    return out


def _log_final(loggers: dict[str, Any], figures: dict[str, Any], step: int) -> None:
    from wattwise.api import numeric

    for lg in loggers.values():
        lg.log_metrics(numeric(figures), step=step)
        experiment_summary = getattr(getattr(lg, "experiment", None), "summary", None)
        if experiment_summary is not None and hasattr(experiment_summary, "update"):
            experiment_summary.update({k: v for k, v in figures.items() if v is not None})
        lg.save()


def _finish_loggers(loggers: dict[str, Any], status: str) -> None:
    for lg in loggers.values():
        try:
            lg.finalize("success" if status == "completed" else "failed")
        except Exception as err:  # a logger failing to close must not hide the run's own error
            log.warning("Closing logger %s failed: %s", type(lg).__name__, err)
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers.values()):
        import wandb

        wandb.finish(exit_code=0 if status == "completed" else 1)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _apply_sweep_settings(cfg: DictConfig) -> None:
    """`sweep.if_not_applicable=skip` (the comparison sweeper's): every chosen method steps aside where
    it does not apply, as `callbacks.<name>.if_not_applicable=skip` would make it, instead of failing."""
    choice = OmegaConf.select(cfg, "sweep.if_not_applicable")
    if choice is None:
        return
    for node in (cfg.get("callbacks") or {}).values():
        if isinstance(node, DictConfig) and "if_not_applicable" in node:
            node.if_not_applicable = choice


def _sweep_fields(cfg: DictConfig) -> dict[str, Any]:
    """variant and position in a comparison sweep, for summary.json and W&B; nothing outside one (a
    harness that labels its own runs, as the benchmark does with `variant`, keeps its labels)."""
    fields = {
        "variant": OmegaConf.select(cfg, "sweep.variant"),
        "position": OmegaConf.select(cfg, "sweep.position"),
    }
    return {k: v for k, v in fields.items() if v is not None}


def _prepare(cfg: DictConfig) -> Any:
    """Checks, threads, sweep settings, warm-up and seed, before anything is built; the thread choice."""
    _quiet_known_noise()
    validate_config(cfg)
    set_trust(cfg.get(TRUST_KEY) is True)  # every checkpoint load is weights-only unless opted in

    import lightning as L

    from wattwise.utils.threads import apply_threads

    threads = apply_threads(cfg.get("cpu_threads", "auto"))
    _apply_sweep_settings(cfg)
    if warmup.wanted(cfg):  # before seeding: the warm-up's draws leave the run's RNG streams alone
        warmup.warm_up(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    return threads


def _start_summary(cfg: DictConfig, threads: Any) -> dict[str, Any]:
    """summary.json's head: what ran, with which settings, where (figures are added at the end)."""
    from wattwise.methods.registry import run_label
    from wattwise.utils.run_info import hydra_overrides, versions

    run_dir = Path(cfg.paths.output_dir)
    config_path = run_dir / ".hydra" / "config.yaml"
    return {
        "status": "running",
        "run_dir": str(run_dir),
        "optim": run_label(cfg),
        "overrides": redact_overrides(hydra_overrides()),
        "seed": cfg.get("seed"),
        "monitor": cfg.get("monitor"),
        "mode": cfg.get("mode"),
        **_sweep_fields(cfg),
        "cpu_threads": torch_threads(),
        "cpu_threads_reason": threads.reason,
        "config_path": str(config_path) if config_path.exists() else None,
        "versions": versions(),
        "launcher": launcher_info(),  # multirun jobs only; warns when jobs share a device
    }


def _log_hyperparameters(cfg: DictConfig, summary: dict[str, Any], loggers: dict[str, Any]) -> None:
    # The chosen options as one string ("amp+prune", "none"): a categorical axis for W&B's parallel
    # coordinates (the options' settings are under callbacks.<name>).
    hparams = {
        **redact(OmegaConf.to_container(cfg, resolve=True)),  # no API key reaches a logger
        "optim_set": "+".join(summary["optim"]) or "none",
        **_sweep_fields(cfg),  # variant and position at the top, beside seed, for W&B's grouping
    }
    for lg in loggers.values():
        lg.log_hyperparams(hparams)


def _fit_and_test(cfg: DictConfig, parts: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(status, fit metrics, test metrics): the fit, then the test pass on the best checkpoint."""
    trainer, module, datamodule = parts["trainer"], parts["module"], parts["datamodule"]
    trainer.fit(
        module,
        datamodule=datamodule,
        ckpt_path=cfg.get("ckpt_path"),
        weights_only=weights_only_for_lightning(),
    )
    fit_metrics = dict(trainer.callback_metrics)
    if trainer.interrupted:
        return "interrupted", fit_metrics, {}
    if not cfg.get("test", True):
        return "completed", fit_metrics, {}
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None  # the monitored one
    results = trainer.test(
        module,
        datamodule=datamodule,
        ckpt_path=best,
        verbose=False,
        weights_only=weights_only_for_lightning(),
    )
    return "completed", fit_metrics, dict(results[0]) if results else {}


def _finish(
    parts: dict[str, Any], summary: dict[str, Any], status: str, fit: dict[str, Any], test: dict[str, Any]
) -> OutputError | None:
    """On rank 0: the figures into summary.json and the loggers, the loggers closed, the table printed."""
    from wattwise.utils.report import format_report
    from wattwise.utils.run_info import device_description

    trainer, loggers = parts["trainer"], parts["loggers"]
    energy = parts["callbacks"].get("energy")
    summary.update(
        status=status,
        device=device_description(trainer),
        energy_source=energy.source if energy else "off",
        energy_method=energy.meter.describe() if energy and energy.meter else None,
        epochs=trainer.current_epoch,
        global_step=trainer.global_step,
    )
    summary.update(_final_metrics(trainer, fit, test))
    loader_settings = getattr(parts["datamodule"], "loader_settings", None)  # TensorDataModule's choice
    if hasattr(loader_settings, "summary_figures"):
        summary.update(loader_settings.summary_figures())
    summary_error = save_summary(Path(summary["run_dir"]), summary)  # a full disk: one line, figures logged
    try:
        _log_final(loggers, {k: v for k, v in summary.items() if "/" in k}, trainer.global_step)
    finally:
        _finish_loggers(loggers, status)
        print("\n" + format_report(summary), flush=True)  # also for failed and interrupted runs
    return summary_error


def train(cfg: DictConfig) -> Any:
    """Validate, build, fit, test; summary.json and the table whatever happens; the sweep objective."""
    from wattwise.utils.resume import check_resume

    threads = _prepare(cfg)
    parts = build(cfg)
    # A ckpt_path (or a requeued job's own checkpoint) must be readable, complete and of this net,
    # data and methods: one line before training, not a traceback after it.
    check_resume(cfg, parts["trainer"], parts["module"], parts["datamodule"], parts["methods"])
    summary = _start_summary(cfg, threads)
    _log_hyperparameters(cfg, summary, parts["loggers"])

    trainer = parts["trainer"]
    status, fit_metrics, test_metrics, summary_error = "failed", {}, {}, None
    try:
        status, fit_metrics, test_metrics = _fit_and_test(cfg, parts)
    except Exception as err:
        summary["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        # Ctrl+C reaches here as Lightning's graceful-shutdown SystemExit, with trainer.interrupted set.
        if status != "completed" and trainer.interrupted and "error" not in summary:
            status = "interrupted"
        if trainer.is_global_zero:
            summary_error = _finish(parts, summary, status, fit_metrics, test_metrics)
    if summary_error is not None:
        raise summary_error
    objective = _objective(cfg, summary)
    if isinstance(objective, float) and math.isnan(objective):
        log.warning("optimized_metric %s was not logged by this run", cfg.get("optimized_metric"))
    return objective


def _saved_config_dir() -> str | None:
    """Where Hydra saved this job's config (`<run dir>/.hydra`), or None when it saves none."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    subdir = hc.output_subdir
    return str(Path(hc.runtime.output_dir) / subdir) if subdir else None


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_entry(cfg: DictConfig) -> Any:
    restore_secret_overrides(cfg)  # taken off the command line in main(), so Hydra saved none
    scrub_saved_config(_saved_config_dir())  # and one a config file set is redacted in the saved copy
    try:
        return train(cfg)
    except (ConfigError, OutputError) as err:
        if in_multirun():  # Hydra marks this job failed and runs the rest of the sweep
            log.error("wattwise: error: %s", err)
            raise
        exit_with_error(str(err), code=2 if isinstance(err, ConfigError) else 1)
    except SystemExit as err:  # SIGTERM: Lightning's SIGTERMException would exit 0
        from wattwise.utils.preemption import interruption_exit_code

        raise SystemExit(interruption_exit_code(err) or err.code) from None


def main() -> None:
    """Console entry point (`python train.py ...` or `wattwise-train ...`)."""
    import sys

    from wattwise.utils.resume_run import expand_resume

    try:
        sys.argv[1:] = expand_resume(sys.argv[1:])  # resume=<run dir>: its overrides and checkpoint
        sys.argv[1:] = hide_secret_overrides(sys.argv[1:])  # API keys never reach Hydra's saved files
    except ConfigError as err:
        exit_with_error(str(err))
    _hydra_entry()


if __name__ == "__main__":
    main()
