"""No checkpoint a user names runs code: a crafted pickle through every loader is refused in one line.

The crafted file is a genuine wattwise checkpoint with one extra object whose pickle would run
`touch <marker>`. Through `ckpt_path=`, `resume=`, a distillation teacher (run dir, `.ckpt`,
`teacher_weights`), the logit cache and the prune/qat best-checkpoint export, the marker is never
created and the run stops naming `trust_checkpoint` (exit 2 from the CLI). With
`trust_checkpoint=true` an old, benign checkpoint holding a non-tensor object still loads.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cli_fork import run_forked
from conftest import SMALL, train_in_process
from omegaconf import OmegaConf

from wattwise.methods.distill import cache as logit_cache
from wattwise.methods.distill.teacher import load_teacher
from wattwise.methods.shared.export import read_checkpoint
from wattwise.utils import safe_load
from wattwise.utils.errors import ConfigError
from wattwise.utils.resume import load_checkpoint as resume_load

PINNED = ["data=digits", "model=mlp"]


class Payload:
    """Unpickling it runs a shell command that creates `marker` (what a crafted checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> Path:
    """A real run dir (checkpoints, .hydra/config.yaml and overrides.yaml) of one tiny run."""
    tmp = tmp_path_factory.mktemp("genuine")
    _, run_dir = train_in_process(tmp, ["trainer.max_epochs=1"], save_config=True)
    OmegaConf.save(OmegaConf.create([*PINNED, "trainer.max_epochs=1"]), run_dir / ".hydra" / "overrides.yaml")
    return run_dir


def _with_extra(run_dir: Path, out: Path, extra: object) -> Path:
    """A copy of the run dir whose checkpoints each also hold `extra` (under a key of their own)."""
    shutil.copytree(run_dir, out)
    for ckpt in (out / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        state["legacy"] = extra
        torch.save(state, ckpt)
    return out


@pytest.fixture
def evil(genuine, tmp_path) -> tuple[Path, Path]:
    """(crafted run dir, the marker its checkpoints' pickles would create)."""
    marker = tmp_path / "pwned"
    return _with_extra(genuine, tmp_path / "evil_run", Payload(marker)), marker


def _refused(err: ConfigError, path: Path | None = None) -> None:
    message = str(err)
    assert "trust_checkpoint=true" in message and "\n" not in message, message
    assert path is None or str(path) in message, message


def test_every_loader_refuses_the_crafted_checkpoint(evil):
    run_dir, marker = evil
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    facts = {"input_shape": [1, 8, 8], "num_classes": 10}
    mlp = {"_target_": "wattwise.models.MLP"}
    loaders = {
        "ckpt_path/resume pre-check": lambda: resume_load(str(ckpt)),
        "teacher run dir": lambda: load_teacher(str(run_dir), None, facts),
        "teacher .ckpt": lambda: load_teacher(str(ckpt), None, facts),
        "teacher_weights": lambda: load_teacher(mlp, str(ckpt), facts),
        "prune/qat export": lambda: read_checkpoint(ckpt, "best checkpoint"),
        "logit cache": lambda: logit_cache.load(ckpt),
    }
    for what, load in loaders.items():
        with pytest.raises(ConfigError) as err:
            load()
        _refused(err.value, ckpt)
        assert not marker.exists(), what


def test_the_prune_and_qat_exports_read_the_best_checkpoint_weights_only(evil):
    """A resumed run's ModelCheckpoint can point `best_model_path` anywhere: the export refuses."""
    from wattwise.methods.prune.callback import Prune
    from wattwise.methods.qat.callback import Qat
    from wattwise.models import MLP, ClassifierModule

    run_dir, marker = evil
    module = ClassifierModule(net=MLP((1, 8, 8), 10), num_classes=10)
    trainer = SimpleNamespace(
        checkpoint_callback=SimpleNamespace(best_model_path=str(run_dir / "checkpoints" / "last.ckpt")),
        current_epoch=1,
    )
    prune = Prune()
    prune._net = module.net
    for export in (lambda: prune._export_weights(trainer, module), lambda: Qat()._best_net(trainer, module)):
        with pytest.raises(ConfigError) as err:
            export()
        _refused(err.value)
    assert not marker.exists()


def test_a_teacher_run_dir_may_only_build_a_net(genuine, tmp_path):
    run_dir = tmp_path / "odd_run"
    shutil.copytree(genuine, run_dir)
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.model.net = {"_target_": "os.system", "command": f"touch {tmp_path / 'pwned'}"}
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    with pytest.raises(ConfigError) as err:
        load_teacher(str(run_dir), None, {"input_shape": [1, 8, 8], "num_classes": 10})
    assert "os.system" in str(err.value) and "trust_checkpoint=true" in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_trust_checkpoint_loads_an_old_benign_checkpoint(genuine, tmp_path):
    old = _with_extra(genuine, tmp_path / "old_run", argparse.Namespace(lr=0.001))
    ckpt = old / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError):
        resume_load(str(ckpt))
    safe_load.set_trust(True)
    try:
        assert isinstance(resume_load(str(ckpt))["legacy"], argparse.Namespace)
        assert load_teacher(str(ckpt), None, {"input_shape": [1, 8, 8], "num_classes": 10}).net is not None
    finally:
        safe_load.set_trust(False)


def test_the_cli_refuses_crafted_checkpoints_in_one_line(evil, genuine, tmp_path):
    """ckpt_path=, resume=, the teacher's run dir and .ckpt from the command line; then the same
    kind of file, benign, resumed with trust_checkpoint=true."""
    run_dir, marker = evil
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    old = _with_extra(genuine, tmp_path / "old_run", argparse.Namespace(lr=0.001))
    teacher = ["+optim=distill", "callbacks.distill.cache=false"]
    runs = {
        "ckpt_path": [f"ckpt_path={ckpt}", "trainer.max_epochs=2"],
        "resume": [f"resume={run_dir}", "trainer.max_epochs=2"],
        "teacher run dir": [*teacher, f"callbacks.distill.teacher={run_dir}"],
        "teacher .ckpt": [*teacher, f"callbacks.distill.teacher={ckpt}"],
        "trusted old": [f"ckpt_path={old / 'checkpoints' / 'last.ckpt'}", "trust_checkpoint=true"],
    }
    cases = [
        {
            "args": [*PINNED, *SMALL, *args, f"hydra.run.dir={tmp_path / 'runs' / str(i)}"],
            "cwd": str(tmp_path),
            "timeout": 90,
            "out": str(tmp_path / "logs" / str(i)),
        }
        for i, args in enumerate(runs.values())
    ]
    cases[-1]["args"] = [a.replace("trainer.max_epochs=1", "trainer.max_epochs=2") for a in cases[-1]["args"]]
    results = dict(zip(runs, run_forked(cases, tmp_path / "fork"), strict=True))
    for what in ("ckpt_path", "resume", "teacher run dir", "teacher .ckpt"):
        r = results[what]
        errors = [ln for ln in r["stderr"].splitlines() if ln.startswith("wattwise: error:")]
        assert r["rc"] == 2 and len(errors) == 1 and "trust_checkpoint=true" in errors[0], (what, r)
        assert "Traceback" not in r["stderr"] + r["stdout"], (what, r["stderr"][-2000:])
        assert not marker.exists(), what
    trusted = results["trusted old"]
    assert trusted["rc"] == 0, trusted["stderr"][-3000:]
    assert "trust_checkpoint=true" in trusted["stdout"] + trusted["stderr"]  # the warning


def test_a_requeued_jobs_hpc_checkpoint_is_loaded_weights_only(evil, monkeypatch):
    """Under SLURM the pre-check reads the hpc checkpoint Lightning will resume from: same refusal."""
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from omegaconf import OmegaConf

    from wattwise.compat import lightning as compat_lightning
    from wattwise.utils.resume import check_resume

    run_dir, marker = evil
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", hpc)
    monkeypatch.setattr(SLURMEnvironment, "detect", staticmethod(lambda: True))
    monkeypatch.setattr(compat_lightning, "hpc_resume_path", lambda trainer: str(hpc))
    trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(run_dir))
    with pytest.raises(ConfigError) as err:
        check_resume(OmegaConf.create({"ckpt_path": None}), trainer, torch.nn.Linear(1, 1), None, [])
    _refused(err.value, hpc)
    assert not marker.exists()
