"""`+optim=compile`: the decision on scripted costs, the compiled net in place, and the fit around it.

The real compile (inductor with gcc) is run once, on a small MLP; the fits replace torch.compile
with the identity (the trial's wiring, the figures, resume and failures do not need a compiler).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from conftest import train_in_process
from torch import nn

from wattwise.methods.base import NotApplicableError, StructureChange
from wattwise.methods.compile import callback as compile_callback
from wattwise.methods.compile import decision as rules
from wattwise.methods.compile import forward as compiled_forward
from wattwise.methods.compile.callback import Compile
from wattwise.methods.compile.decision import Costs, Decision, Trial
from wattwise.methods.compile.forward import CompiledForward, choose_mode, install, installed, uninstall

SIGNAL = ["data._target_=mypkg.SignalDataModule", "model.net._target_=mypkg.SignalCNN"]
RUN = [*SIGNAL, "trainer.accelerator=cpu", "callbacks.model_checkpoint.monitor=null", "test=false"]
TRIAL = [  # the trial at once: 1 measured step each, so 2 + 2 + 1 = 5 batches of one epoch
    "+optim=compile",
    "callbacks.compile.min_steps=0",
    "callbacks.compile.start_step=0",
    "callbacks.compile.measure_steps=1",
    "callbacks.compile.expected_compile_s=0",
    "++trainer.limit_train_batches=6",
]


# ---- the decision, pure -------------------------------------------------------------------------
def test_keeps_the_compiled_net_when_the_saving_repays_the_compile():
    d = rules.decide(Costs(eager=1.0, compiled=0.6, compile=40.0, unit="J"), steps_left=1000)
    assert d.kept and d.break_even_steps == pytest.approx(100.0) and d.saving_per_step == pytest.approx(0.4)
    assert "compiled kept" in rules.describe(d, Costs(1.0, 0.6, 40.0, "J"))


def test_stays_eager_when_the_run_is_shorter_than_the_break_even():
    costs = Costs(eager=1.0, compiled=0.6, compile=40.0, unit="s")
    d = rules.decide(costs, steps_left=99)
    assert not d.kept and d.break_even_steps == pytest.approx(100.0)
    text = rules.describe(d, costs)
    assert text.startswith("eager kept") and "break-even after 100 steps, 99 left" in text


def test_stays_eager_when_a_compiled_step_is_no_cheaper():
    d = rules.decide(Costs(eager=1.0, compiled=1.2, compile=0.0, unit="J"), steps_left=float("inf"))
    assert not d.kept and d.break_even_steps is None


def test_the_best_case_check_runs_before_paying_the_compile():
    cost = rules.expected_compile_cost(20.0, eager=0.5, eager_s=0.05, unit="J")  # 10 W x 20 s
    assert cost == pytest.approx(200.0)
    assert rules.expected_compile_cost(20.0, 0.5, 0.05, "s") == 20.0
    assert not rules.worth_trying(0.5, cost, steps_left=800, max_saving=0.5)  # at best 200 J
    assert rules.worth_trying(0.5, cost, steps_left=801, max_saving=0.5)
    assert rules.worth_trying(0.5, cost, steps_left=float("inf"), max_saving=0.5)


def test_steps_left_counts_batches_still_to_run():
    assert rules.steps_left(100, 40, 1) == 60 and rules.steps_left(100, 40, 4) == 240
    assert rules.steps_left(10, 12, 1) == 0


def test_the_trial_schedule_measures_eager_then_the_compile_then_compiled():
    trial = Trial(measure=2, warm=1)
    events = [trial.advance() for _ in range(trial.batches())]
    assert events == [
        [],
        [("begin", "eager")],
        [],
        [("end", "eager"), ("begin", "compile")],
        [("end", "compile"), ("begin", "compiled")],
        [],
        [("end", "compiled")],
    ]


def test_cuda_graphs_only_on_cuda_with_static_shapes():
    assert choose_mode("auto", "cuda", True) == "reduce-overhead"
    assert choose_mode("auto", "cuda", False) == "default" == choose_mode("auto", "cpu", True)
    assert choose_mode("max-autotune", "cpu", False) == "max-autotune"
    ds = torch.utils.data.TensorDataset(torch.zeros(10, 2))
    assert compiled_forward.static_batches(torch.utils.data.DataLoader(ds, batch_size=5))
    assert not compiled_forward.static_batches(torch.utils.data.DataLoader(ds, batch_size=4))
    assert compiled_forward.static_batches(torch.utils.data.DataLoader(ds, batch_size=4, drop_last=True))


# ---- the compiled net in place, for real ----------------------------------------------------------
def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.slow
def test_a_real_compile_keeps_state_dict_keys_trains_and_loads_both_ways():
    net = _mlp()
    keys = list(net.state_dict())
    install(net, CompiledForward(net, "default"))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    losses = []
    for _ in range(5):
        out = net(x)
        assert type(out.grad_fn).__name__ == "CompiledFunctionBackward"  # really compiled
        loss = nn.functional.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert installed(net).failure is None and losses[-1] < losses[0]
    assert list(net.state_dict()) == keys
    eager = _mlp()
    eager.load_state_dict(net.state_dict())  # compiled -> eager
    torch.testing.assert_close(eager(x), net(x))
    back = _mlp()
    install(back, CompiledForward(back, "default"))
    back.load_state_dict(eager.state_dict())  # eager -> compiled
    torch.testing.assert_close(back(x), eager(x))
    assert type(copy.deepcopy(net)(x).grad_fn).__name__ != "CompiledFunctionBackward"  # a copy runs eager
    uninstall(net)
    assert installed(net) is None and type(net(x).grad_fn).__name__ == "AddmmBackward0"


def test_a_compiler_error_falls_back_to_eager_and_says_why(monkeypatch):
    def broken(fn, mode=None):
        def run(*args, **kwargs):
            raise RuntimeError("inductor: no C++ compiler\nlong traceback text")

        return run

    monkeypatch.setattr(compiled_forward.torch, "compile", broken)
    net = _mlp()
    forward = CompiledForward(net, "default")
    install(net, forward)
    assert net(torch.randn(2, 8)).shape == (2, 3)  # this step ran eager
    assert forward.failure == "RuntimeError: inductor: no C++ compiler"


# ---- the callback, on fakes -----------------------------------------------------------------------
def _trainer(estimated: float, global_step: int = 0) -> SimpleNamespace:
    strategy = SimpleNamespace(root_device=torch.device("cpu"), broadcast=lambda obj, src=0: obj)
    return SimpleNamespace(
        estimated_stepping_batches=estimated,
        global_step=global_step,
        accumulate_grad_batches=1,
        num_training_batches=1000,
        strategy=strategy,
        train_dataloader=None,
        is_global_zero=True,
    )


def test_a_structure_change_drops_the_compiled_net_and_decides_again(monkeypatch):
    monkeypatch.setattr(compiled_forward.torch, "compile", lambda fn, mode=None: fn)
    method = Compile(if_not_applicable="skip")
    module = SimpleNamespace(net=_mlp())
    method.on_train_start(_trainer(5000), module)
    method.decision = Decision(True, 10.0, 5000.0, 0.1)  # as if measured and kept
    method.costs = Costs(1.0, 0.9, 1.0, "J")
    method.status = compile_callback.STATUS_COMPILED
    method._install()
    assert installed(module.net) is not None
    module.net = _mlp()  # the pruned net
    method.on_structure_change(_trainer(5000), module, StructureChange(source="prune", epoch=1))
    assert (
        installed(method._net) is None
        and method.decision is None
        and method.state_dict() == {"decision": None}
    )
    assert "prune" in method.reason and method._net is module.net
    method.on_train_batch_start(_trainer(5000, global_step=4900), module, None, 0)  # 100 left < 200
    assert method.status == "eager" and "100 training steps left < min_steps=200" in method.reason


def test_too_few_steps_stay_eager_without_compiling(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(compiled_forward.torch, "compile", lambda *a, **k: calls.append(a))
    summary, _ = train_in_process(tmp_path, [*RUN, "trainer.max_epochs=2", "+optim=compile"])
    assert summary["status"] == "completed" and calls == []
    assert summary["compile/status"] == "eager" and summary["compile/kept"] is False
    assert summary["compile/steps_left"] == 6  # 2 epochs of 3 batches (tests/conftest.py SMALL)
    assert summary["compile/reason"].startswith("6 training steps left < min_steps=200")


# ---- the callback in a fit (torch.compile replaced by the identity) ----------------------------------
@pytest.fixture
def identity_compile(monkeypatch):
    monkeypatch.setattr(compiled_forward.torch, "compile", lambda fn, mode=None: fn)


def test_the_trial_measures_decides_and_reports_its_figures(tmp_path, identity_compile):
    summary, _ = train_in_process(tmp_path, [*RUN, *TRIAL])
    assert summary["status"] == "completed", summary.get("error")
    assert summary["compile/unit"] == "J" and summary["compile/eager_per_step"] > 0
    assert summary["compile/compiled_per_step"] > 0 and summary["compile/compile_cost"] >= 0
    assert summary["compile/steps_left"] == 4  # 6 batches, 2 done (warm-up, eager) when it was considered
    assert summary["compile/status"] in ("compiled", "eager")
    assert summary["compile/kept"] == (summary["compile/status"] == "compiled")
    assert "break-even" in summary["compile/reason"] or "no cheaper" in summary["compile/reason"]


def test_a_resumed_run_keeps_the_measured_decision_without_measuring(tmp_path, identity_compile, monkeypatch):
    real = rules.decide
    monkeypatch.setattr(
        rules, "decide", lambda costs, left: Decision(True, 1.0, left, real(costs, left).saving_per_step)
    )
    _, half = train_in_process(tmp_path / "half", [*RUN, *TRIAL, "trainer.max_epochs=1"])
    ckpt = torch.load(half / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["callbacks"]["wattwise.compile"]["decision"]["kept"] is True
    monkeypatch.setattr(rules, "decide", lambda *a: pytest.fail("measured again after a resume"))
    summary, _ = train_in_process(
        tmp_path / "resumed",
        [*RUN, *TRIAL, "trainer.max_epochs=2", f"ckpt_path={half}/checkpoints/last.ckpt"],
    )
    assert summary["status"] == "completed", summary.get("error")
    assert summary["compile/status"] == "compiled" and summary["compile/reason"].startswith("resumed: ")


def test_a_failed_compile_steps_aside_in_one_line(tmp_path, monkeypatch):
    def broken(fn, mode=None):
        def run(*args, **kwargs):
            raise RuntimeError("dynamo: unsupported\nmore")

        return run

    monkeypatch.setattr(compiled_forward.torch, "compile", broken)
    summary, _ = train_in_process(
        tmp_path / "skip", [*RUN, *TRIAL, "callbacks.compile.if_not_applicable=skip"]
    )
    assert summary["status"] == "completed" and summary["compile/status"] == "skipped"
    assert (
        summary["compile/skipped"]
        == "torch.compile failed (RuntimeError: dynamo: unsupported); the net trains eager"
    )
    method = Compile()
    method._forward = SimpleNamespace(failure="RuntimeError: x")
    with pytest.raises(NotApplicableError) as err:
        method.on_train_batch_end(_trainer(10), None, None, None, 0)
    assert "\n" not in str(err.value) and "callbacks.compile.if_not_applicable=skip" in str(err.value)


def test_epochs_shorter_than_the_trial_stay_eager_without_measuring():
    method = Compile(min_steps=0)
    trainer = _trainer(5000)
    trainer.num_training_batches = 10  # the trial needs 2 + 2 x 8 + 1 = 19 batches of one epoch
    method.on_train_start(trainer, SimpleNamespace(net=_mlp()))
    assert method.status == "eager" and method._trial is None
    assert method.reason.startswith("epochs of 10 batches are shorter than the trial (19 batches")


def test_after_a_prune_the_decision_is_made_again_for_the_new_net(tmp_path, identity_compile, monkeypatch):
    real, decided = rules.decide, []

    def keep(costs, left):
        decided.append(left)
        return Decision(True, 1.0, left, real(costs, left).saving_per_step)

    monkeypatch.setattr(rules, "decide", keep)
    prune = ["callbacks.prune.start_epoch=1", "callbacks.prune.end_epoch=1"]
    overrides = [*RUN, *TRIAL, "+optim=[compile,prune]", *prune, "trainer.max_epochs=2"]
    summary, _ = train_in_process(tmp_path, [o for o in overrides if o != "+optim=compile"])
    assert summary["status"] == "completed", summary.get("error")
    assert summary["prune/status"] == "active" and summary["prune/macs"] < summary["prune/base_macs"]
    assert decided == [10, 4]  # epoch 0: 12 - 2 batches; after the prune at epoch 1: 12 - 8
    assert summary["compile/status"] == "compiled" and summary["compile/steps_left"] == 4
