"""+optim=prune: channels really go, training stays correct after every prune, checkpoints load."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONF_DIR, ROOT, compose_cfg, run_cli
from torch import nn

from wattwise.methods.prune.callback import Prune, restore_structure, schedule_ratios, tensor_shapes
from wattwise.models import CNN, ClassifierModule
from wattwise.train import build, train
from wattwise.utils.errors import ConfigError

# Four epochs, prunes at the start of epochs 1, 2, 3; no rounding so that every step changes widths.
PRUNE = [
    "model=cnn",
    "+optim=prune",
    "energy=estimate",
    "trainer.max_epochs=4",
    "trainer.limit_train_batches=2",
    "callbacks.prune.start_epoch=1",
    "callbacks.prune.end_epoch=3",
    "callbacks.prune.round_to=null",
    "callbacks.prune.export_program=false",
]


def _summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def _fit(cfg, *probes: L.Callback, before: L.Callback | None = None):
    """Build from the real config and fit, with test probes after (or one before) the prune callback."""
    parts = build(cfg)
    trainer = parts["trainer"]
    if before is not None:
        trainer.callbacks.insert(0, before)
    trainer.callbacks.extend(probes)
    trainer.fit(parts["module"], datamodule=parts["datamodule"])
    return parts


# ---- settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": 1.2}, r"callbacks.prune.ratio must be in \[0, 1\), got 1.2"),
        ({"ratio": -0.1}, r"callbacks.prune.ratio must be in \[0, 1\)"),
        ({"macs_reduction": 0.5}, r"callbacks.prune.macs_reduction must be > 1"),
        ({"start_epoch": 3, "end_epoch": 2}, r"callbacks.prune.end_epoch must be an integer >= "),
        ({"importance": "random"}, r"callbacks.prune.importance must be one of"),
        ({"schedule": "exp"}, r"callbacks.prune.schedule must be one of"),
        ({"importance": "taylor", "start_epoch": 0}, r"start_epoch must be >= 1 with importance=taylor"),
        ({"round_to": 0}, r"callbacks.prune.round_to must be a positive integer"),
        ({"min_base_macs": -1}, r"callbacks.prune.min_base_macs must be >= 0 or null"),
    ],
)
def test_bad_settings_fail_fast(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Prune(**kwargs)


def test_bad_setting_is_a_config_error(make_cfg):
    cfg = make_cfg("model=cnn", "+optim=prune", "callbacks.prune.ratio=1.2", "energy=off")
    with pytest.raises(ConfigError, match=r"callbacks\.prune\.ratio must be in \[0, 1\), got 1\.2"):
        train(cfg)


def test_untraceable_or_empty_model_fails_with_a_clear_message(make_cfg):
    # An MLP with no hidden layer is only the classifier head, which is never pruned.
    cfg = make_cfg("model=mlp", "model.net.hidden=[]", "+optim=prune", "energy=off")
    with pytest.raises(ValueError, match="no prunable channel group"):
        train(cfg)
    cfg = make_cfg("model=cnn", "+optim=prune", "energy=off", "callbacks.prune.ignored_layers=[nope]")
    with pytest.raises(ValueError, match="ignored_layers: no layer named 'nope'"):
        train(cfg)


def test_schedules_reach_the_ratio_monotonically():
    cubic, linear = schedule_ratios(0.5, 4, "cubic"), schedule_ratios(0.5, 4, "linear")
    assert cubic[0] == linear[0] == 0.0 and cubic[-1] == pytest.approx(0.5) == linear[-1]
    assert all(a < b for a, b in zip(cubic, cubic[1:])) and all(a < b for a, b in zip(linear, linear[1:]))
    assert cubic[1] > linear[1]  # Zhu & Gupta: most channels go early
    assert cubic[1] == pytest.approx(0.5 * (1 - 0.75**3))


# ---- MACs on schedule ------------------------------------------------------------------------------
def test_macs_fall_on_schedule_and_reach_the_summary(make_cfg):
    cfg = make_cfg(*PRUNE, "callbacks.prune.schedule=linear")
    train(cfg)
    s = _summary(cfg.paths.output_dir)
    assert s["status"] == "completed"
    base, final = s["prune/base_macs"], s["prune/macs"]
    assert s["prune/base_params"] > s["prune/params"] > 0
    # ratio 0.5 of every conv's channels: interior convs lose ~3/4 of their MACs
    assert base / final > 3.0 and s["prune/ratio"] == pytest.approx(0.5)
    import csv

    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r["prune/macs"] and r.get("epoch")]  # per-epoch rows
    macs = [float(r["prune/macs"]) for r in logged]
    ratios = [float(r["prune/ratio"]) for r in logged]
    assert len(macs) == 3 and all(a > b for a, b in zip([base, *macs], macs))  # one drop per prune epoch
    assert ratios == pytest.approx(schedule_ratios(0.5, 3, "linear")[1:])
    # the export loads for inference with torch alone / without the callback
    net = torch.load(Path(cfg.paths.output_dir) / "pruned_net.pt", weights_only=False)
    assert isinstance(net, CNN) and net.classifier.in_features == 32
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    # the wider net's best checkpoints are deleted when best tracking restarts: one best + last
    kept = sorted(p.name for p in (Path(cfg.paths.output_dir) / "checkpoints").glob("*.ckpt"))
    assert len(kept) == 2 and "last.ckpt" in kept, kept


def test_macs_reduction_target_is_reached(make_cfg):
    cfg = make_cfg(*PRUNE, "callbacks.prune.ratio=null", "callbacks.prune.macs_reduction=2.5")
    train(cfg)
    s = _summary(cfg.paths.output_dir)
    assert s["prune/base_macs"] / s["prune/macs"] == pytest.approx(2.5, rel=0.05)
    assert 0.2 < s["prune/ratio"] < 0.5


# ---- training stays correct after a prune ----------------------------------------------------------
class _Snapshot(L.Callback):
    """At each epoch start (after the prune) snapshot the net; at the epoch end check what trained."""

    def __init__(self, prune_epochs):
        self.prune_epochs = set(prune_epochs)
        self.before: dict[str, torch.Tensor] = {}
        self.checked = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.before = {n: p.detach().clone() for n, p in pl_module.net.named_parameters()}
        opt = trainer.optimizers[0]
        in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
        trainable = {id(p) for p in pl_module.parameters() if p.requires_grad}
        assert in_opt == trainable, "the optimizer must hold exactly the net's current trainable tensors"
        for p in pl_module.parameters():
            for v in opt.state.get(p, {}).values():
                assert not torch.is_tensor(v) or v.dim() == 0 or v.shape == p.shape
        assert all(m.training for m in pl_module.net.modules()), "train mode must survive the prune"
        if (
            trainer.current_epoch in self.prune_epochs
        ):  # best tracking restarts: the wider net no longer competes
            assert trainer.checkpoint_callback.best_model_score is None
            for es in trainer.early_stopping_callbacks:
                assert es.wait_count == 0 and es.best_score == -torch.inf

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch not in self.prune_epochs:
            return
        for name, p in pl_module.net.named_parameters():
            moved = not torch.equal(p.detach(), self.before[name])
            if p.requires_grad:
                assert moved, f"{name} did not train after the prune at epoch {trainer.current_epoch}"
            else:
                assert not moved, f"frozen {name} changed"
        self.checked.append(trainer.current_epoch)


class _Freeze(L.Callback):
    def setup(self, trainer, pl_module, stage):
        pl_module.net.features[0][1].weight.requires_grad_(False)  # the first BN's gamma


def test_every_parameter_trains_after_each_prune_and_frozen_stay_frozen(make_cfg):
    cfg = make_cfg(
        *PRUNE,
        "+callbacks.es={_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val/acc,"
        " mode: max, patience: 50}",
    )
    probe = _Snapshot(prune_epochs=[1, 2, 3])
    parts = _fit(cfg, probe, before=_Freeze())
    assert probe.checked == [1, 2, 3]
    bn = parts["module"].net.features[0][1]
    assert bn.num_features < 32 and not bn.weight.requires_grad  # pruned and still frozen


class _MomentumProbe(L.Callback):
    """Before the prune: keep each weight and its momentum; after: kept rows keep their momentum."""

    def __init__(self, where):
        self.where, self.matched, self.expected = where, 0, 0

    def on_train_epoch_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        if trainer.current_epoch == 0:
            return  # no momentum before the first step
        state = {n: opt.state[p]["momentum_buffer"].clone() for n, p in pl_module.net.named_parameters()}
        weights = {n: p.detach().clone() for n, p in pl_module.net.named_parameters()}
        if self.where == "before":
            self.weights, self.state = weights, state
            return
        before = trainer.callbacks[0]
        name = "features.0.0.weight"  # first conv: only its output channels are pruned
        old_w, old_m = before.weights[name], before.state[name]
        new_w, new_m = weights[name], state[name]
        if new_w.shape == old_w.shape:
            return
        self.expected += new_w.shape[0]
        for row in range(new_w.shape[0]):
            src = [i for i in range(old_w.shape[0]) if torch.equal(old_w[i], new_w[row])]
            assert src, "a kept filter must be a row of the old weight"
            assert torch.equal(new_m[row], old_m[src[0]]), "momentum must be sliced like the weight"
            self.matched += 1


def test_optimizer_state_is_sliced_and_lr_schedule_continues(make_cfg):
    cfg = make_cfg(
        *PRUNE,
        "model.optimizer._target_=torch.optim.SGD",
        "model.optimizer.lr=0.1",
        "+model.optimizer.momentum=0.9",
        "model.scheduler={_target_: torch.optim.lr_scheduler.StepLR, _partial_: true,"
        " step_size: 1, gamma: 0.5}",
    )
    lrs: list[float] = []

    class _LR(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):  # runs after the prune callback's hook
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    before, after = _MomentumProbe("before"), _MomentumProbe("after")
    parts = _fit(cfg, after, _LR(), before=before)
    assert after.matched == after.expected >= 32  # every kept filter of the first conv, at each prune
    assert lrs == pytest.approx(
        [0.1 * 0.5**e for e in range(4)]
    )  # LR right after each prune: StepLR carried on
    sched = parts["trainer"].lr_scheduler_configs[0].scheduler
    assert sched.optimizer is parts["trainer"].optimizers[0] and sched.last_epoch == 4


@pytest.mark.parametrize("importance", ["taylor", "bn_scale"])
def test_other_importances_prune(make_cfg, importance, caplog):
    cfg = make_cfg(*PRUNE, f"callbacks.prune.importance={importance}")
    probe = _Snapshot(prune_epochs=[1, 2, 3])
    parts = _fit(cfg, probe)
    cb = parts["callbacks"]["prune"]
    assert cb.macs < cb.base_macs and probe.checked == [1, 2, 3]
    assert "no gradients gathered" not in caplog.text  # Taylor got the real gradients of the epoch before


def test_compiler_is_reset_after_each_prune(make_cfg, monkeypatch):
    import torch._dynamo

    calls = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: calls.append(1))
    _fit(make_cfg(*PRUNE))
    assert len(calls) == 3


# ---- checkpoints ---------------------------------------------------------------------------------
def test_restore_structure_resizes_both_ways():
    wide, narrow = CNN((1, 8, 8), 10, (16, 32)), CNN((1, 8, 8), 10, (8, 24))
    ckpt = {"wattwise_structure": tensor_shapes(narrow)}
    assert restore_structure(wide, ckpt)
    wide.load_state_dict(narrow.state_dict())
    x = torch.randn(3, 1, 8, 8)
    wide.eval(), narrow.eval()
    assert torch.equal(wide(x), narrow(x)) and wide.classifier.in_features == 24
    grow = {"wattwise_structure": tensor_shapes(CNN((1, 8, 8), 10, (16, 32)))}
    assert restore_structure(narrow, grow) and narrow.features[0][0].out_channels == 16
    assert not restore_structure(nn.Linear(2, 2), {})


@pytest.mark.slow
def test_resume_mid_schedule_matches_uninterrupted_run(tmp_path):
    full = compose_cfg(tmp_path / "full", PRUNE)
    train(full)
    half = compose_cfg(tmp_path / "half", [*PRUNE, "trainer.max_epochs=2"])
    train(half)  # one prune done (epoch 1), two to come
    ckpt = Path(half.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert _summary(half.paths.output_dir)["prune/macs"] > _summary(full.paths.output_dir)["prune/macs"]
    resumed = compose_cfg(tmp_path / "resumed", [*PRUNE, f"ckpt_path={ckpt}"])
    train(resumed)  # fit(ckpt_path=...) and then trainer.test(ckpt_path="best") both load pruned weights
    s_full, s_res = _summary(full.paths.output_dir), _summary(resumed.paths.output_dir)
    assert s_res["status"] == "completed" and s_res["test/acc"] is not None
    for key in ("prune/macs", "prune/params", "prune/ratio", "prune/base_macs"):
        assert s_res[key] == s_full[key], key
    shapes = lambda run: tensor_shapes(torch.load(Path(run) / "pruned_net.pt", weights_only=False))  # noqa: E731
    assert shapes(resumed.paths.output_dir) == shapes(full.paths.output_dir)

    # load_from_checkpoint with a freshly built (unpruned) net gives the pruned net and its outputs
    last = Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt"
    module = ClassifierModule.load_from_checkpoint(last, net=CNN((1, 8, 8), 10, (32, 64)), weights_only=False)
    exported = torch.load(Path(resumed.paths.output_dir) / "pruned_net.pt", weights_only=False)
    assert tensor_shapes(module.net) == tensor_shapes(exported)
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(module.eval()(x), exported(x))


# ---- composition ---------------------------------------------------------------------------------
@pytest.mark.parametrize("other", ["amp", "early_stop"])
def test_composes_with(make_cfg, other):
    if not (CONF_DIR / "optim" / f"{other}.yaml").exists():
        pytest.skip(f"conf/optim/{other}.yaml is not on this branch (written in parallel; runs after merge)")
    cfg = make_cfg(*[o for o in PRUNE if o != "+optim=prune"], f"+optim=[prune,{other}]")
    train(cfg)
    s = _summary(cfg.paths.output_dir)
    assert s["status"] == "completed" and s["prune/macs"] < s["prune/base_macs"]
    assert set(s["optim"]) == {"prune", other}


@pytest.mark.slow
def test_ddp_two_cpu_processes_prune_identically(tmp_path):
    proc = run_cli(
        [
            "model=cnn",
            "+optim=prune",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_epochs=3",
            "+trainer.limit_train_batches=3",
            "+trainer.limit_val_batches=2",
            "+trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            "callbacks.prune.start_epoch=1",
            "callbacks.prune.end_epoch=2",
            "callbacks.prune.round_to=null",
            "callbacks.prune.export_program=false",
            "energy=estimate",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = _summary(tmp_path / "run")
    # DDP checks at wrap time that every rank's parameters have the same shapes, so a run that
    # completes two prunes with a rebuilt wrapper had ranks prune identically.
    assert s["status"] == "completed" and "x2 processes" in s["device"]
    assert s["prune/macs"] < s["prune/base_macs"] / 3
    net = torch.load(tmp_path / "run" / "pruned_net.pt", weights_only=False)
    assert net.classifier.in_features == 32


def test_green_leaves_a_net_too_small_to_gain_unpruned(make_cfg):
    cfg = make_cfg("+optim=green", "trainer.max_epochs=3")  # the default MLP: 19 k MACs per sample
    train(cfg)
    s = _summary(cfg.paths.output_dir)
    assert s["status"] == "completed"
    # green sets if_not_applicable=skip: prune steps aside, says why, and reports no MACs of its own
    assert s["prune/status"] == "skipped" and "min_base_macs=100000" in s["prune/skipped"]
    assert "prune/macs" not in s
    assert not (Path(cfg.paths.output_dir) / "pruned_net.pt").exists()


def test_an_unpruned_green_run_trains_like_its_baseline(make_cfg, tmp_path):
    """Tracing the net for MACs must not consume the global RNG: with pruning skipped (and amp and
    power changing nothing on this CPU MLP), green's first epoch matches the baseline's exactly.
    data_cache is left out: it shuffles with its own seeded order, not the DataLoader's."""
    from conftest import compose_cfg

    losses = []
    for name, extra in (
        ("base", []),
        ("green", ["+optim=green", "++callbacks.early_stop=null", "++callbacks.data_cache=null"]),
    ):
        cfg = compose_cfg(tmp_path / name, ["seed=5", *extra])
        train(cfg)
        losses.append(_summary(cfg.paths.output_dir)["val/loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
