"""+optim=prune on any net and any LightningModule (issue 23): what torch-pruning cannot handle is
rolled back and stepped aside in one line; a pruned checkpoint resumes on the user's own module.

The nets torch-pruning gets wrong are the user's (tests/mypkg): an LSTM behind an input projection
(an `IndexError` with one layer, `assert layer.num_layers==1` with two) and a patch Transformer
whose `flatten(1)` head its dependency graph cuts to the wrong width.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import cpu_trainer, run_cli, train_in_process
from lightning.pytorch.callbacks import ModelCheckpoint
from mypkg import LSTMNet, PatchTransformer, SignalCNN, SignalDataModule, UserClassifier
from zoo import PRUNE_ASIDE, SIGNAL

from wattwise.methods.base import NotApplicableError
from wattwise.methods.prune import guard
from wattwise.methods.prune.callback import Prune
from wattwise.methods.shared.structure import tensor_shapes
from wattwise.models import ClassifierModule
from wattwise.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NETS = {
    "lstm1": (LSTMNet, {}),
    "lstm2": (LSTMNet, {"num_layers": 2}),
    "patch_transformer": (PatchTransformer, {}),
}
# what each step-aside reason quotes of torch-pruning's failure
FAILURES = {
    "lstm1": "IndexError: index out of range",
    "lstm2": "assert layer.num_layers==1",
    "patch_transformer": "RuntimeError: mat1 and mat2 shapes cannot be multiplied",
}


def _trainer(tmp_path: Path, *callbacks: L.Callback, epochs: int = 2, checkpoint: bool = False) -> L.Trainer:
    return cpu_trainer(tmp_path, *callbacks, epochs=epochs, checkpoint=checkpoint, limit_test_batches=1)


def _classifier(name: str) -> tuple[SignalDataModule, ClassifierModule]:
    torch.manual_seed(0)
    dm = SignalDataModule(num_samples=120)
    make, kwargs = NETS[name]
    net = make(dm.input_shape, dm.num_classes, **kwargs)
    return dm, ClassifierModule(net=net, num_classes=dm.num_classes)


def _prune(**kwargs) -> Prune:
    defaults = {"start_epoch": 1, "end_epoch": 1, "ratio": 0.5, "export_program": False}
    return Prune(**{**defaults, **kwargs})


# ---- stepping aside, in one line ---------------------------------------------------------------------
@pytest.mark.parametrize("name", list(NETS))
def test_a_net_torch_pruning_cannot_handle_steps_aside_or_stops_in_one_line(tmp_path, name):
    dm, module = _classifier(name)
    shapes = tensor_shapes(module.net)
    cb = _prune(if_not_applicable="skip")
    trainer = _trainer(tmp_path, cb)
    trainer.fit(module, datamodule=dm)
    figures = cb.summary_figures()
    assert trainer.current_epoch == 2 and tensor_shapes(module.net) == shapes
    assert figures["prune/status"] == "skipped" and FAILURES[name] in figures["prune/skipped"]
    assert (
        "\n" not in figures["prune/skipped"] and "callbacks.prune.ignored_layers" in figures["prune/skipped"]
    )

    dm, module = _classifier(name)  # asked for by name: the run stops in one line, before training
    with pytest.raises(NotApplicableError) as err:
        _trainer(tmp_path, _prune()).fit(module, datamodule=dm)
    msg = str(err.value)
    assert isinstance(err.value, ConfigError) and "\n" not in msg and FAILURES[name] in msg
    assert msg.startswith("+optim=prune does not apply here") and "if_not_applicable=skip" in msg
    assert tensor_shapes(module.net) == shapes


# ---- the rollback ------------------------------------------------------------------------------------
class _Before(L.Callback):
    """Placed before Prune: the net's tensors and the optimizer's state right before the prune."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            self.params = {n: p for n, p in pl_module.named_parameters()}
            self.values = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
            self.state = {id(p): dict(s) for p, s in trainer.optimizers[0].state.items()}
            assert self.state, "Adam has state to keep"


class _After(L.Callback):
    """Placed after Prune: the rolled-back net is the same objects, shapes and values as before."""

    def __init__(self, before: _Before):
        self.before, self.checked = before, False

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch != 1:
            return
        now = dict(pl_module.named_parameters())
        assert {n: p.shape for n, p in now.items()} == {n: p.shape for n, p in self.before.params.items()}
        assert all(now[n] is p for n, p in self.before.params.items())  # DDP's hooks stay valid
        assert all(torch.equal(now[n], v) for n, v in self.before.values.items())
        opt = trainer.optimizers[0]
        assert [id(p) for g in opt.param_groups for p in g["params"]] == [id(p) for p in now.values()]
        assert {id(p) for p in opt.state} == set(self.before.state)
        for p, state in opt.state.items():  # the same moments, not restarted ones
            assert all(state[k] is v for k, v in self.before.state[id(p)].items()) and len(state) == len(
                self.before.state[id(p)]
            )
        pl_module.net(torch.zeros(3, 1, 40))  # it runs
        self.checked = True


@pytest.mark.parametrize("name", list(NETS))
def test_a_prune_that_breaks_the_net_is_rolled_back(tmp_path, name, monkeypatch):
    """Without the trial at fit start, the scheduled prune itself fails (half-way through an LSTM's
    tensors, or into a net that no longer runs): net and optimizer are put back as they were."""
    monkeypatch.setattr(guard, "trial_prune", lambda *args, **kwargs: None)
    dm, module = _classifier(name)
    before = _Before()
    after = _After(before)
    cb = _prune(if_not_applicable="skip")
    trainer = _trainer(tmp_path, before, cb, after, epochs=3)
    trainer.fit(module, datamodule=dm)
    assert after.checked and trainer.current_epoch == 3 and cb.steps_done == 0
    reason = cb.summary_figures()["prune/skipped"]
    assert "at epoch 1; rolled back to the net before it" in reason and FAILURES[name] in reason

    dm, module = _classifier(name)
    shapes = tensor_shapes(module)
    with pytest.raises(NotApplicableError, match="rolled back") as err:
        _trainer(tmp_path, _prune(), epochs=3).fit(module, datamodule=dm)
    assert "\n" not in str(err.value) and tensor_shapes(module) == shapes


# ---- through train.py ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRUNE_ASIDE))
def test_green_completes_with_prune_stepped_aside(tmp_path, name):
    summary, run_dir = train_in_process(tmp_path, [*PRUNE_ASIDE[name], "+optim=green"])
    assert summary["status"] == "completed" and summary["prune/status"] == "skipped"
    assert FAILURES[name] in summary["prune/skipped"] and "prune/macs" not in summary
    assert not (run_dir / "pruned_net.pt").exists()


def test_prune_with_skip_records_why_in_the_summary(tmp_path):
    overrides = [*PRUNE_ASIDE["lstm1"], "+optim=prune", "callbacks.prune.if_not_applicable=skip"]
    summary, _ = train_in_process(tmp_path, overrides)
    assert summary["status"] == "completed" and summary["prune/status"] == "skipped"
    assert FAILURES["lstm1"] in summary["prune/skipped"]


def test_prune_asked_by_name_on_an_lstm_exits_2_in_one_line(tmp_path):
    args = [*PRUNE_ASIDE["lstm2"], "+optim=prune", "energy=estimate", f"hydra.run.dir={tmp_path}/run"]
    path = os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    proc = run_cli([*args, "cpu_threads=1"], cwd=tmp_path, env={"PYTHONPATH": path})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "torch_pruning" not in proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("wattwise: error")]
    assert line.startswith("wattwise: error: +optim=prune does not apply here")
    assert FAILURES["lstm2"] in line and "callbacks.prune.if_not_applicable=skip" in line


# ---- resuming a pruned run on the user's own LightningModule ---------------------------------------
def _user(seed: int = 0) -> tuple[SignalDataModule, UserClassifier]:
    torch.manual_seed(seed)
    dm = SignalDataModule(num_samples=120)
    return dm, UserClassifier(net=SignalCNN(dm.input_shape, dm.num_classes))


def _fit_user(
    root: Path, epochs: int, ckpt_path: Path | None = None
) -> tuple[L.Trainer, UserClassifier, Prune]:
    dm, module = _user()
    cb = _prune(end_epoch=2, round_to=None)
    last = ModelCheckpoint(dirpath=root / "ck", save_last=True)
    trainer = _trainer(root, cb, last, epochs=epochs, checkpoint=True)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, module, cb


def test_a_pruned_run_of_a_user_module_resumes_like_an_uninterrupted_one(tmp_path):
    assert UserClassifier.on_load_checkpoint is L.LightningModule.on_load_checkpoint  # no hook of its own
    full, full_module, full_cb = _fit_user(tmp_path / "full", epochs=4)
    half, half_module, _ = _fit_user(tmp_path / "half", epochs=2)  # one prune done, one to come
    assert tensor_shapes(half_module.net) != tensor_shapes(full_module.net)
    last = tmp_path / "half" / "ck" / "last.ckpt"
    resumed, module, cb = _fit_user(tmp_path / "resumed", epochs=4, ckpt_path=last)
    assert (resumed.current_epoch, resumed.global_step) == (full.current_epoch, full.global_step)
    assert cb.steps_done == full_cb.steps_done == 2 and cb.macs == full_cb.macs
    assert tensor_shapes(module) == tensor_shapes(full_module)

    dm, fresh = _user()  # the test pass on a pruned checkpoint, into an unpruned module
    [results] = resumed.test(fresh, datamodule=dm, ckpt_path=tmp_path / "resumed" / "ck" / "last.ckpt")
    assert "test/acc" in results and tensor_shapes(fresh) == tensor_shapes(full_module)
    dm, fresh = _user()
    [again] = resumed.test(fresh, datamodule=dm, ckpt_path="best")
    assert tensor_shapes(fresh) == tensor_shapes(full_module) and again == results


def test_without_num_classes_the_layers_of_the_output_width_are_left_alone(tmp_path):
    """A module and datamodule that name no number of classes (a regression's): the head is found
    from the width of what the net returns, and the output keeps its shape."""
    dm, module = _user()
    del dm.num_classes
    assert not module.hparams
    cb = _prune(round_to=None)
    _trainer(tmp_path, cb).fit(module, datamodule=dm)
    assert cb.status == "active" and cb.macs < cb.base_macs
    assert module.net.head.out_features == 10 and module.net.head.in_features < 32


def test_without_the_method_a_user_module_cannot_load_a_pruned_checkpoint(tmp_path, monkeypatch):
    """The control: the resize above is the method's doing, not the user module's."""
    _fit_user(tmp_path / "half", epochs=2)
    from wattwise.compat import lightning as compat_lightning

    monkeypatch.setattr(compat_lightning, "after_checkpoint_read", lambda *args, **kwargs: None)
    with pytest.raises(RuntimeError, match="size mismatch"):
        _fit_user(tmp_path / "resumed", epochs=3, ckpt_path=tmp_path / "half" / "ck" / "last.ckpt")


def test_a_user_module_resumes_through_train_py_and_tests_the_pruned_best(tmp_path):
    from omegaconf import OmegaConf

    from wattwise.utils.resume_run import expand_resume

    user = [
        SIGNAL,
        "model._target_=mypkg.UserClassifier",
        "model.net._target_=mypkg.SignalCNN",
        "+optim=prune",
        "callbacks.prune.end_epoch=2",
        "callbacks.prune.round_to=null",
        "callbacks.prune.export_program=false",
    ]
    full, _ = train_in_process(tmp_path / "full", [*user, "trainer.max_epochs=3"])
    half_overrides = [*user, "trainer.max_epochs=2"]
    half, half_dir = train_in_process(tmp_path / "half", half_overrides)
    (half_dir / ".hydra").mkdir(exist_ok=True)  # what a train.py run saves, for resume=<run dir>
    OmegaConf.save(OmegaConf.create(half_overrides), half_dir / ".hydra" / "overrides.yaml")
    resumed_overrides = expand_resume([f"resume={half_dir}", "trainer.max_epochs=3"])
    assert resumed_overrides[-1] == f"ckpt_path={half_dir / 'checkpoints' / 'last.ckpt'}"
    resumed, resumed_dir = train_in_process(tmp_path / "resumed", resumed_overrides)
    assert half["prune/macs"] > full["prune/macs"]
    assert resumed["status"] == "completed" and resumed["test/acc"] is not None  # the best: pruned
    for key in ("epochs", "global_step", "prune/macs", "prune/params", "prune/base_macs"):
        assert resumed[key] == full[key], key
    net = torch.load(resumed_dir / "pruned_net.pt", weights_only=False)
    assert tensor_shapes(net) == tensor_shapes(
        torch.load(Path(full["run_dir"]) / "pruned_net.pt", weights_only=False)
    )
