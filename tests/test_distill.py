"""+optim=distill: the loss, where gradients go, where the teacher never appears, the logit cache,
wrong teachers, resuming, and the energy accounting (break-even, time share on a GPU counter)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_cfg, train_in_process
from hydra.core.global_hydra import GlobalHydra

from wattwise.methods.distill import accounting, cache
from wattwise.methods.distill.callback import Distill
from wattwise.methods.distill.loss import hinton_loss
from wattwise.methods.distill.teacher import load_teacher
from wattwise.models.module import ClassifierModule
from wattwise.train import train
from wattwise.utils.errors import ConfigError

FLAT = "callbacks.distill.teacher={_target_:teachers.FlatTeacher}"
TWO_EPOCHS = ["trainer.max_epochs=2", "callbacks.model_checkpoint.monitor=null", "test=false"]


def _train(root: Path, overrides: list[str]) -> tuple[dict, Path]:
    """Train in this process; the run dir gets the `.hydra/config.yaml` a `train.py` run writes."""
    return train_in_process(root, overrides, save_config=True)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    """A wider MLP trained on digits for one short epoch: a real wattwise run dir to distil from."""
    root = tmp_path_factory.mktemp("teacher")
    summary, run_dir = _train(root, ["model.net.hidden=[128]", "++trainer.limit_train_batches=6"])
    assert summary["status"] == "completed"
    return run_dir


# ---- the loss -----------------------------------------------------------------------------------
def test_hinton_loss_matches_a_hand_computed_value():
    s, t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([0])
    T, alpha = 2.0, 0.75
    # softmax at T=2: student (0.5, 0) -> p_s; teacher (0, 1) -> p_t
    p_s = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    p_t = [1 / (1 + math.e), math.e / (1 + math.e)]
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    ce = -math.log(math.exp(1) / (math.exp(1) + 1))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert hinton_loss(s, t, y, T, alpha).item() == pytest.approx(expected, rel=1e-6)
    assert hinton_loss(s, t, y, T, 0.0).item() == pytest.approx(ce, rel=1e-6)  # alpha 0: plain CE


def test_soft_target_gradients_reach_the_student_only():
    method = Distill(teacher={"_target_": "teachers.FlatTeacher"}, alpha=1.0)
    method.teacher = load_teacher(method.teacher_spec, None, {"input_shape": (4,), "num_classes": 3})
    method.status = "active"
    student = torch.nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    logits = student(x)
    loss = method.loss_term(F.cross_entropy(logits, y), logits, (x, y), "train")
    loss.backward()
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    teacher_params = list(method.teacher.net.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher_params)
    assert not method.teacher.net.training
    val = method.loss_term(torch.tensor(1.5), logits, (x, y), "val")  # validation keeps plain CE
    assert val.item() == 1.5


def test_the_module_loss_is_plain_cross_entropy_without_terms_and_terms_add_no_state():
    net = torch.nn.Linear(4, 3)
    module = ClassifierModule(net, num_classes=3)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    keys = set(module.state_dict())
    assert torch.equal(module._step((x, y))[0], F.cross_entropy(net(x), y))
    module.loss_terms.append(lambda loss, logits, batch, stage: loss * 2)
    assert torch.equal(module._step((x, y))[0], 2 * F.cross_entropy(net(x), y))
    assert set(module.state_dict()) == keys


# ---- the teacher stays out of the student ---------------------------------------------------------
def test_teacher_never_enters_the_students_checkpoint_or_macs(tmp_path, teacher_run):
    prune = ["+optim=prune", "callbacks.prune.start_epoch=0", "callbacks.prune.end_epoch=1"]
    alone, alone_dir = _train(tmp_path / "prune", [*TWO_EPOCHS, *prune])
    both, both_dir = _train(
        tmp_path / "both",
        [
            *TWO_EPOCHS,
            "+optim=[distill,prune]",
            f"callbacks.distill.teacher={teacher_run}",
            "callbacks.prune.start_epoch=0",
            "callbacks.prune.end_epoch=1",
        ],
    )
    assert both["distill/status"] == "active" and both["prune/status"] == alone["prune/status"]
    assert both["prune/base_macs"] == alone["prune/base_macs"] and both["prune/macs"] == alone["prune/macs"]
    ours, theirs = _weights(both_dir), _weights(alone_dir)
    assert set(ours) == set(theirs)  # no teacher.* or other extra key
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    ckpt = torch.load(both_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = ckpt["callbacks"]["wattwise.distill"]
    assert not any(isinstance(v, torch.Tensor | dict) for v in state.values())  # counters only
    # the teacher (128 hidden units) was the real run's, and its training energy was read
    assert str(teacher_run) in both["distill/teacher"]
    teacher_summary = json.loads((teacher_run / "summary.json").read_text())
    assert both["distill/teacher_train_J"] == teacher_summary["energy/total_J"]


@pytest.mark.parametrize("form", ["ckpt", "target"])
def test_a_teacher_given_as_a_ckpt_or_a_target_with_weights_is_the_same_teacher(tmp_path, teacher_run, form):
    ckpt = teacher_run / "checkpoints" / "last.ckpt"
    spec = (
        [f"callbacks.distill.teacher={ckpt}"]
        if form == "ckpt"
        else [
            "callbacks.distill.teacher={_target_:wattwise.models.MLP,hidden:[128]}",
            f"callbacks.distill.teacher_weights={ckpt}",
        ]
    )
    summary, _ = _train(tmp_path, ["+optim=distill", *spec])
    teacher_summary = json.loads((teacher_run / "summary.json").read_text())
    assert summary["distill/status"] == "active" and summary["distill/teacher_forwards"] == 3
    assert summary["distill/teacher_train_J"] == teacher_summary["energy/total_J"]  # read from its run


# ---- the cache --------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["32-true", pytest.param("bf16-mixed", marks=pytest.mark.slow)])
def test_a_cached_run_matches_an_uncached_one_exactly_and_runs_the_teacher_less(
    tmp_path, teacher_run, precision
):
    """bf16-mixed: the cache is built under the step's own autocast, so it is exact there too."""
    base = [*TWO_EPOCHS, "+optim=distill", f"callbacks.distill.teacher={teacher_run}", "seed=7"]
    base.append(f"trainer.precision={precision}")
    cached = [*base, "callbacks.distill.cache=true", f"callbacks.distill.cache_dir={tmp_path}/cache"]
    live, live_dir = _train(tmp_path / "live", base)
    first, first_dir = _train(tmp_path / "first", cached)
    again, again_dir = _train(tmp_path / "again", cached)
    a, b, c = _weights(live_dir), _weights(first_dir), _weights(again_dir)
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    # live: 2 epochs x 3 batches; first: one pass over the whole training set builds the cache;
    # again: the cache from disk, the teacher never runs
    assert live["distill/teacher_forwards"] == 6 and live["distill/teacher_samples"] == 6 * 64
    assert first["distill/cache_built_here"] and first["distill/teacher_samples"] > 6 * 64
    assert again["distill/teacher_forwards"] == 0 and not again["distill/cache_built_here"]
    assert again["distill/teacher_J"] == 0.0 < live["distill/teacher_J"]
    assert again["distill/cache_build_J"] == first["distill/cache_build_J"] > 0
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # one cache, no temporary file left


def test_random_augmentation_refuses_the_cache_in_one_line():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int):
            return torch.randn(3), 0

    with pytest.raises(ConfigError, match=r"callbacks\.distill\.cache=true.*augmentation") as err:
        cache.check_repeatable(Noisy())
    assert "\n" not in str(err.value)
    cache.check_repeatable(torch.utils.data.TensorDataset(torch.randn(8, 3)))  # fixed data passes


def test_a_sample_missing_from_the_cache_is_an_error_not_someone_elses_logits():
    x = torch.randn(10, 1, 5)
    keys, logits = cache.build([x[:6], x[6:]], lambda b: b.flatten(1)[:, :2] * 3)
    c = cache.LogitCache(keys, logits, {})
    shuffled = x[torch.tensor([3, 9, 0])]
    assert torch.equal(c.lookup(shuffled), shuffled.flatten(1)[:, :2] * 3)
    with pytest.raises(ConfigError, match="not in the teacher's cached logits"):
        c.lookup(x[:2] + 1e-3)


def test_sample_keys_are_order_free_and_tell_close_inputs_apart():
    x = torch.randn(50, 40)
    k = cache.sample_keys(x)
    assert torch.equal(cache.sample_keys(x.flip(0)), k.flip(0))
    assert len(torch.unique(k)) == 50
    bumped = x.clone()
    bumped[0, 17] = torch.nextafter(bumped[0, 17], torch.tensor(1e9))  # one ulp in one feature
    assert cache.sample_keys(bumped)[0] != k[0]
    tokens = torch.randint(0, 100, (20, 16))  # int64 token ids
    assert len(torch.unique(cache.sample_keys(tokens))) == 20


# ---- wrong teachers -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("teacher", "says"),
    [
        ("{_target_:teachers.FlatTeacher,num_classes:3}", "gives 3 logits per sample but the task has 10"),
        ("{_target_:teachers.FlatTeacher,input_shape:[5]}", "cannot take this task's inputs"),
        ("/no/such/run", "no such wattwise run dir"),
    ],
)
def test_a_wrong_teacher_is_refused_in_one_line(tmp_path, teacher, says):
    cfg = compose_cfg(tmp_path, ["+optim=distill", f"callbacks.distill.teacher={teacher}"])
    try:
        with pytest.raises(ConfigError, match=says) as err:
            train(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert "\n" not in str(err.value) and str(err.value).startswith("callbacks.distill.teacher")


def test_a_teacher_trained_for_another_task_is_refused_in_one_line(tmp_path, teacher_run):
    """The digits teacher on the 1D signals: its weights do not fit the net rebuilt for this task."""
    cfg = compose_cfg(
        tmp_path,
        [
            "data._target_=mypkg.SignalDataModule",
            "model.net._target_=mypkg.SignalCNN",
            "+optim=distill",
            f"callbacks.distill.teacher={teacher_run}",
        ],
    )
    try:
        with pytest.raises(ConfigError, match="do not fit the net rebuilt for this task") as err:
            train(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert "\n" not in str(err.value)


# ---- resuming -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cached", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_resuming_mid_run_continues_the_counts_and_the_cache(tmp_path, teacher_run, cached):
    over = [*TWO_EPOCHS, "+optim=distill", f"callbacks.distill.teacher={teacher_run}"]
    if cached:  # the cache built beforehand: every run below finds it
        over += ["callbacks.distill.cache=true", f"callbacks.distill.cache_dir={tmp_path}/cache"]
        built, _ = _train(tmp_path / "build", [*over, "trainer.max_epochs=1"])
        assert built["distill/cache_built_here"]
    full, _ = _train(tmp_path / "full", over)
    _, half = _train(tmp_path / "half", [*over, "trainer.max_epochs=1"])
    resumed, _ = _train(tmp_path / "resumed", [*over, f"ckpt_path={half}/checkpoints/last.ckpt"])
    for key in (
        "distill/teacher_forwards",
        "distill/teacher_samples",
        "distill/cached",
        "distill/cache_built_here",
    ):
        assert resumed[key] == full[key], key
    assert resumed["distill/cache_build_J"] == full["distill/cache_build_J"]
    assert resumed["distill/teacher_J"] > 0 if not cached else resumed["distill/teacher_J"] == 0.0


# ---- energy accounting ------------------------------------------------------------------------------
def test_break_even_counts_the_one_off_costs_against_the_saving_per_run():
    # teacher 1000 J + cache 50 J once; a cached run 70 J vs 100 J from scratch: 1050 / 30 = 35 runs
    runs, text = accounting.break_even_runs(100.0, 70.0, 1000.0, 50.0, built_here=False)
    assert runs == pytest.approx(35.0) and "35.0 runs" in text
    # the run that built the cache paid it on top: its per-run cost is 120 - 50 = 70 J, same answer
    assert accounting.break_even_runs(100.0, 120.0, 1000.0, 50.0, built_here=True)[0] == pytest.approx(35.0)
    runs, text = accounting.break_even_runs(100.0, 130.0, 1000.0, None, built_here=False)
    assert runs is None and text.startswith("never")
    assert accounting.break_even_runs(None, 130.0, 1000.0, None, built_here=False)[0] is None


def test_on_a_gpu_energy_counter_the_teacher_gets_its_time_share_of_the_measured_energy():
    class Meter:
        source = "zeus-nvml"

    class Monitor:
        total_J, time_s, meter = 600.0, 60.0, Meter()

    method = Distill(teacher={"_target_": "teachers.FlatTeacher"})
    method._monitor, method._meter, method.teacher_s = Monitor(), Meter(), 6.0
    figures = method.method_figures()
    assert figures["distill/teacher_J"] == pytest.approx(60.0)  # 10 W average x 6 s in the teacher
    assert figures["distill/teacher_J_basis"] == accounting.BASIS_TIME_SHARE
    Meter.source = "estimate"  # the estimate (CPU seconds x watts) is metered by window
    method.teacher_J = 1.25
    assert method.method_figures()["distill/teacher_J"] == 1.25


def test_a_baseline_is_read_and_gives_the_break_even_in_the_summary(tmp_path, teacher_run):
    baseline, baseline_dir = _train(tmp_path / "baseline", TWO_EPOCHS)
    summary, _ = _train(
        tmp_path / "distil",
        [
            *TWO_EPOCHS,
            "+optim=distill",
            f"callbacks.distill.teacher={teacher_run}",
            f"callbacks.distill.baseline={baseline_dir}",
        ],
    )
    assert summary["distill/baseline_J"] == baseline["energy/total_J"]
    text = summary["distill/break_even"]
    assert text.startswith("never") or "runs: one-off" in text
    with pytest.raises(ConfigError, match=r"callbacks\.distill\.baseline=/nowhere"):
        Distill(teacher=str(teacher_run), baseline="/nowhere")


def test_without_a_teacher_it_steps_aside_or_stops_in_one_line():
    from wattwise.methods.base import NotApplicableError

    skipped = Distill(teacher=None, if_not_applicable="skip")
    assert skipped.status == "skipped" and "callbacks.distill.teacher" in skipped.skipped_reason
    with pytest.raises(NotApplicableError, match=r"\+optim=distill does not apply here: no teacher") as err:
        Distill(teacher=None)
    assert "\n" not in str(err.value)


def test_the_teacher_hash_covers_every_tensor_batchnorm_counters_included():
    from wattwise.methods.distill.teacher import weights_sha256

    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    before = weights_sha256(net)  # num_batches_tracked is a 0-dim tensor
    net[1].running_mean += 1
    assert weights_sha256(net) != before
