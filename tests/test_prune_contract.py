"""+optim=prune beyond CNNs: token Transformers, nets it does not apply to, the export, the contract.

Modules are built directly (ClassifierModule + lightning.Trainer + Prune) so these
tests do not depend on how train.py wires methods in.
"""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import cpu_trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from mypkg import GRUNet, MyDataModule, SignalDataModule, TokenDataModule, TokenTransformer
from torch import nn

from wattwise.methods.base import EnergyMethod, NotApplicableError
from wattwise.methods.prune.callback import Prune, restore_structure, tensor_shapes
from wattwise.models import CNN, ClassifierModule
from wattwise.utils.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "wattwise"


def _trainer(tmp_path: Path, *callbacks: L.Callback, epochs: int = 3, checkpoint: bool = True) -> L.Trainer:
    return cpu_trainer(tmp_path, *callbacks, epochs=epochs, checkpoint=checkpoint)


def _tokens(**net_kwargs):
    torch.manual_seed(0)
    dm = TokenDataModule(num_samples=192)
    net = TokenTransformer(dm.input_shape, dm.num_classes, **net_kwargs)
    return dm, ClassifierModule(net=net, num_classes=dm.num_classes)


def _prune(**kwargs) -> Prune:
    defaults = {"start_epoch": 1, "end_epoch": 1, "ratio": 0.5, "export_program": False}
    return Prune(**{**defaults, **kwargs})


# ---- token inputs -----------------------------------------------------------------------------------
def test_a_transformer_over_token_ids_is_traced_with_real_int64_samples(tmp_path):
    dm, module = _tokens()
    cb = _prune(round_to=None, ratio=0.4)
    _trainer(tmp_path, cb, checkpoint=False).fit(module, datamodule=dm)
    assert cb.status == "active" and cb._example.dtype == torch.long and cb._example.shape == (2, 16)
    mha = module.net.encoder.layers[0].self_attn
    assert module.net.pos.shape[-1] == mha.embed_dim < 64  # d_model really shrank
    assert mha.embed_dim % mha.num_heads == 0 and mha.head_dim == mha.embed_dim // mha.num_heads
    assert mha.out_proj.in_features == mha.out_proj.out_features == mha.embed_dim
    assert cb.macs < cb.base_macs
    assert module(torch.randint(0, dm.num_classes, (3, 16))).shape == (3, dm.num_classes)


def test_tracing_with_real_samples_leaves_the_global_rng_alone(tmp_path):
    dm, module = _tokens()
    cb = _prune()
    trainer = _trainer(tmp_path, cb, checkpoint=False)
    trainer.strategy.connect(module)
    trainer._data_connector.attach_datamodule(module, datamodule=dm)
    dm.setup("fit")
    state = torch.random.get_rng_state()
    from wattwise.methods.shared.inputs import example_input

    x = example_input(dm, module.net, None, "callbacks.prune")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert x.dtype == torch.long and torch.equal(x, dm.val_set.tensors[0][:2])
    floats = example_input(dm, module.net, (16,), "callbacks.prune")  # input_shape: float override
    assert floats.dtype == torch.float32 and floats.shape == (2, 16)


# ---- every parameter trains after a prune, optimizer state is sliced --------------------------------
class _SeedAdamState(L.Callback):
    """Right before the prune: make each Adam moment a copy of its weight, so slicing is visible."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch != 1:
            return
        opt = trainer.optimizers[0]
        for p in pl_module.parameters():
            st = opt.state[p]
            st["exp_avg"] = p.detach().clone()
            st["exp_avg_sq"] = p.detach().abs().clone()
        self.shapes = {n: p.shape for n, p in pl_module.net.named_parameters()}


class _CheckAfterPrune(L.Callback):
    def __init__(self, seed: _SeedAdamState):
        self.seed, self.sliced, self.moved = seed, [], []

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch != 1:
            return
        opt = trainer.optimizers[0]
        in_opt = [p for g in opt.param_groups for p in g["params"]]
        assert {id(p) for p in in_opt} == {id(p) for p in pl_module.parameters()}
        for name, p in pl_module.net.named_parameters():
            st = opt.state[p]
            assert st, f"{name}: Adam state was reset"
            for k, v in st.items():
                assert not torch.is_tensor(v) or v.dim() == 0 or v.shape == p.shape, (name, k)
            if p.shape != self.seed.shapes[name]:  # pruned: its moments hold the kept rows of the old ones
                assert torch.equal(st["exp_avg"], p.detach()), name
                assert torch.equal(st["exp_avg_sq"], p.detach().abs()), name
                self.sliced.append(name)
        self.before = {n: p.detach().clone() for n, p in pl_module.net.named_parameters()}

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch != 1:
            return
        for name, p in pl_module.net.named_parameters():
            assert not torch.equal(p.detach(), self.before[name]), f"{name} did not train after the prune"
            self.moved.append(name)


def test_after_pruning_a_transformer_every_parameter_trains_and_adam_state_is_sliced(tmp_path):
    dm, module = _tokens()
    seed = _SeedAdamState()
    check = _CheckAfterPrune(seed)
    cb = _prune()
    _trainer(tmp_path, seed, cb, check, epochs=2, checkpoint=False).fit(module, datamodule=dm)
    assert cb.steps_done == 1
    for name in (
        "pos",
        "encoder.layers.0.self_attn.out_proj.weight",
        "encoder.layers.0.self_attn.in_proj_weight",
    ):
        assert name in check.sliced and name in check.moved, name
    assert set(check.moved) == {n for n, _ in module.net.named_parameters()}


# ---- checkpoints of a pruned Transformer ------------------------------------------------------------
def test_restore_structure_keeps_attention_attributes_consistent():
    small = TokenTransformer((16,), 30, d_model=32)
    big = TokenTransformer((16,), 30, d_model=64)
    assert restore_structure(big, {"wattwise_structure": tensor_shapes(small)})
    mha = big.encoder.layers[0].self_attn
    assert (mha.embed_dim, mha.head_dim, mha.kdim, mha.vdim) == (32, 8, 32, 32)
    assert big.embed.embedding_dim == 32 and big.encoder.layers[0].linear1.in_features == 32
    big.load_state_dict(small.state_dict())
    x = torch.randint(0, 30, (2, 16))
    big.eval(), small.eval()
    assert torch.allclose(big(x), small(x))


def test_a_pruned_transformer_resumes_and_loads_from_its_checkpoint(tmp_path):
    dm, module = _tokens()
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    _trainer(tmp_path, _prune(), ckpt_cb, epochs=2).fit(module, datamodule=dm)
    last = tmp_path / "ck" / "last.ckpt"
    width = module.net.encoder.layers[0].self_attn.embed_dim
    assert width < 64

    dm2, fresh = _tokens()  # an unpruned net resumes the pruned run
    cb2 = _prune()
    _trainer(tmp_path / "resumed", cb2, epochs=3, checkpoint=False).fit(fresh, datamodule=dm2, ckpt_path=last)
    assert cb2.steps_done == 1 and fresh.net.encoder.layers[0].self_attn.embed_dim == width
    assert tensor_shapes(fresh.net) == tensor_shapes(module.net)

    loaded = ClassifierModule.load_from_checkpoint(
        last, net=TokenTransformer(dm.input_shape, dm.num_classes), weights_only=False
    )
    x = torch.randint(0, dm.num_classes, (4, 16))
    module.eval(), loaded.eval()
    assert torch.allclose(loaded(x), module(x), atol=1e-6)


# ---- the export ---------------------------------------------------------------------------------------
class _ScoreFallsEachEpoch(L.Callback):
    """A monitored score that is best at the first epoch after the prune: best != last checkpoint."""

    def on_validation_epoch_end(self, trainer, pl_module):
        pl_module.log("probe/score", float(-trainer.current_epoch))


@pytest.mark.parametrize("kind", ["cnn", "tokens"])
def test_the_exported_program_takes_any_batch_and_holds_the_best_checkpoint(tmp_path, kind):
    if kind == "cnn":
        torch.manual_seed(0)
        dm = MyDataModule()
        module = ClassifierModule(net=CNN((1, 8, 8), 2, (16, 32)), num_classes=2)
        inputs = {b: torch.randn(b, 1, 8, 8) for b in (1, 64)}
    else:
        dm, module = _tokens()
        inputs = {b: torch.randint(0, dm.num_classes, (b, 16)) for b in (1, 64)}
        inputs[7] = inputs[64][:7, :9]  # a shorter sequence
    cb = _prune(export_dir=str(tmp_path / "out"), export_program=True, round_to=None)
    best = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="probe/score", mode="max", save_top_k=1)
    _trainer(tmp_path, cb, _ScoreFallsEachEpoch(), best, epochs=3).fit(module, datamodule=dm)
    figures = cb.summary_figures()
    assert figures["prune/export_weights"] == "best" and figures["prune/export_epoch"] == 1
    assert figures["prune/export_checkpoint"] == best.best_model_path
    assert figures["prune/export_dynamic"] == ("batch" if kind == "cnn" else "batch,seq")

    program = torch.export.load(tmp_path / "out" / "pruned_net.pt2").module()  # torch alone
    whole = torch.load(tmp_path / "out" / "pruned_net.pt", weights_only=False).eval()
    ckpt = torch.load(best.best_model_path, weights_only=False)
    best_state = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    for name, value in whole.state_dict().items():
        assert torch.equal(value, best_state[name]), f"export is not the best checkpoint's {name}"
    assert any(not torch.equal(v, module.net.state_dict()[n]) for n, v in whole.state_dict().items())
    for x in inputs.values():
        out = program(x)
        assert out.shape == (len(x), dm.num_classes)
        with torch.no_grad():
            assert torch.allclose(out, whole(x), atol=1e-5)


# ---- where pruning does not apply -------------------------------------------------------------------
def _gru(tmp_path, **kwargs):
    dm = SignalDataModule(num_samples=120)
    module = ClassifierModule(net=GRUNet(dm.input_shape, dm.num_classes), num_classes=dm.num_classes)
    cb = _prune(**kwargs)
    return dm, module, cb, _trainer(tmp_path, cb, epochs=2, checkpoint=False)


def test_a_gru_fails_in_one_line_naming_the_way_out(tmp_path):
    dm, module, cb, trainer = _gru(tmp_path)
    with pytest.raises(NotApplicableError) as err:
        trainer.fit(module, datamodule=dm)
    msg = str(err.value)
    assert "\n" not in msg and "no prunable channel group in GRUNet" in msg
    assert "callbacks.prune.if_not_applicable=skip" in msg and isinstance(err.value, ConfigError)


def test_a_gru_with_skip_trains_unpruned_and_says_why(tmp_path):
    dm, module, cb, trainer = _gru(tmp_path, if_not_applicable="skip", export_dir=str(tmp_path / "out"))
    shapes = tensor_shapes(module.net)
    trainer.fit(module, datamodule=dm)
    assert trainer.current_epoch == 2 and tensor_shapes(module.net) == shapes
    figures = cb.summary_figures()
    assert figures["prune/status"] == "skipped" and "no prunable channel group" in figures["prune/skipped"]
    assert not any(k in figures for k in Prune.summary_keys)
    assert not (tmp_path / "out").exists()
    assert Prune.report_rows(figures) == [("prune", f"skipped: {figures['prune/skipped']}")]


def test_a_net_under_min_base_macs_steps_aside(tmp_path):
    dm, module = _tokens()
    cb = _prune(min_base_macs=1e9, if_not_applicable="skip")
    _trainer(tmp_path, cb, epochs=2, checkpoint=False).fit(module, datamodule=dm)
    assert cb.status == "skipped" and "callbacks.prune.min_base_macs=1e+09" in cb.skipped_reason
    assert module.net.encoder.layers[0].self_attn.embed_dim == 64
    with pytest.raises(NotApplicableError, match="min_base_macs"):
        _, module = _tokens()
        _trainer(tmp_path, _prune(min_base_macs=1e9), checkpoint=False).fit(module, datamodule=dm)


def test_a_net_torch_pruning_cannot_trace_steps_aside(tmp_path, monkeypatch):
    from wattwise.methods.prune import tp_adapter

    def untraceable(*args, **kwargs):
        raise RuntimeError("unsupported operation in the graph\nmore lines of torch-pruning's traceback")

    monkeypatch.setattr(tp_adapter, "build_pruner", untraceable)
    dm, module = _tokens()
    with pytest.raises(NotApplicableError) as err:
        _trainer(tmp_path, _prune(), checkpoint=False).fit(module, datamodule=dm)
    msg = str(err.value)
    assert (
        "\n" not in msg
        and "could not trace TokenTransformer" in msg
        and "callbacks.prune.ignored_layers" in msg
    )


# ---- the contract -------------------------------------------------------------------------------------
def test_prune_declares_the_method_contract(tmp_path):
    assert issubclass(Prune, EnergyMethod)
    cb = Prune()
    assert (cb.name, cb.figure_prefix, cb.state_key, cb.status) == (
        "prune",
        "prune/",
        "wattwise.prune",
        "idle",
    )
    assert Prune.recipes == {"green": {"min_base_macs": 100000}}
    with pytest.raises(ConfigError, match=r"^callbacks.prune.if_not_applicable must be fail or skip"):
        Prune(if_not_applicable="maybe")
    with pytest.raises(ConfigError, match=r"^callbacks.prune.ratio must be in \[0, 1\), got 1.2"):
        Prune(ratio=1.2)
    torch.manual_seed(0)
    dm = MyDataModule()
    module = ClassifierModule(net=CNN((1, 8, 8), 2, (16, 32)), num_classes=2)
    cb = _prune(round_to=None)
    _trainer(tmp_path, cb, epochs=2, checkpoint=False).fit(module, datamodule=dm)
    figures = cb.summary_figures()
    assert figures["prune/status"] == "active" and set(Prune.summary_keys) <= set(figures)
    assert all(k.startswith("prune/") for k in figures)
    [(label, text)] = Prune.report_rows(figures)
    assert (
        label == "MACs (prune)"
        and f"{figures['prune/macs']:,.0f} of {figures['prune/base_macs']:,.0f}" in text
    )
    restored = Prune()
    restored.load_state_dict(cb.state_dict())
    assert restored.state_dict() == cb.state_dict()


def test_only_the_adapter_imports_torch_pruning():
    files = sorted(SRC.rglob("*.py"))
    importers = [
        str(f.relative_to(SRC))
        for f in files
        if re.search(r"^\s*(import|from) torch_pruning", f.read_text(), re.M)
    ]
    assert importers == ["compat/torch_pruning.py", "methods/prune/tp_adapter.py"]
    assert "1.6.1" in (SRC / "methods" / "prune" / "tp_adapter.py").read_text().split('"""')[1]


def test_a_frozen_layer_stays_frozen_and_no_grad_free_net_is_touched(tmp_path):
    torch.manual_seed(0)
    dm = MyDataModule()
    net = CNN((1, 8, 8), 2, (16, 32))
    net.features[0][1].weight.requires_grad_(False)
    module = ClassifierModule(net=net, num_classes=2)
    cb = _prune(round_to=None)
    _trainer(tmp_path, cb, epochs=2, checkpoint=False).fit(module, datamodule=dm)
    assert net.features[0][1].num_features < 16 and not net.features[0][1].weight.requires_grad
    assert isinstance(net.features[0][1].weight, nn.Parameter)
