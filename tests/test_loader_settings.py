"""Data-loader settings chosen for the hardware (wattwise.data.loader_settings): each rule, pinned inputs."""

from __future__ import annotations

import pytest

from wattwise.data import loader_settings as ls
from wattwise.data.loader_settings import choose_loader_settings
from wattwise.utils.errors import ConfigError


def choose(**kw):
    facts = {"data_in_memory": True, "accelerator": "cpu", "cores": 16}
    return choose_loader_settings(**{**facts, **kw})


@pytest.mark.parametrize("accelerator", ["cpu", "cuda"])
@pytest.mark.parametrize("cores", [1, 2, 16])
def test_data_in_memory_gets_no_workers_anywhere(accelerator, cores):
    s = choose(accelerator=accelerator, cores=cores)
    assert s.num_workers == 0 and s.persistent_workers is False and s.prefetch_factor is None
    assert "in memory" in s.reasons[0]


@pytest.mark.parametrize(
    ("accelerator", "cores", "workers"),
    [("cuda", 1, 0), ("cuda", 2, 1), ("cuda", 16, 8), ("cpu", 1, 0), ("cpu", 2, 1), ("cpu", 16, 2)],
)
def test_data_decoded_per_sample_gets_workers_by_cores_and_device(accelerator, cores, workers):
    s = choose(data_in_memory=False, accelerator=accelerator, cores=cores)
    assert s.num_workers == workers
    assert s.persistent_workers is (workers > 0)
    assert s.prefetch_factor == (ls.PREFETCH_DEFAULT if workers else None)


def test_pinned_only_when_training_on_cuda():
    assert choose(accelerator="cuda").pin_memory is True
    assert choose(accelerator="cpu").pin_memory is False
    assert choose(accelerator="mps").pin_memory is False
    forced = choose(accelerator="cpu", pin_memory=True)  # nothing to copy to: off, and it says so
    assert forced.pin_memory is False and any("data.pin_memory=true" in r for r in forced.reasons)
    assert choose(accelerator="cuda", pin_memory=False).pin_memory is False


def test_explicit_values_win():
    s = choose(num_workers=3, persistent_workers=False, prefetch_factor=5)
    assert (s.num_workers, s.persistent_workers, s.prefetch_factor) == (3, False, 5)
    assert "num_workers set by data.num_workers" in s.reasons
    assert "persistent_workers set by data.persistent_workers" in s.reasons
    assert "prefetch_factor set by data.prefetch_factor" in s.reasons
    assert choose(num_workers=3).persistent_workers is True  # auto follows the explicit workers


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"num_workers": -1}, "data.num_workers"),
        ({"num_workers": "many"}, "data.num_workers"),
        ({"num_workers": True}, "data.num_workers"),
        ({"pin_memory": "yes"}, "data.pin_memory"),
        ({"persistent_workers": 1}, "data.persistent_workers"),
        ({"persistent_workers": True}, "data.persistent_workers"),  # no workers to keep
        ({"prefetch_factor": 0, "num_workers": 2}, "data.prefetch_factor"),
        ({"prefetch_factor": 2}, "data.prefetch_factor"),  # no workers to prefetch
    ],
)
def test_bad_values_fail_in_one_line_naming_the_key(kw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        choose(**kw)
    assert "\n" not in str(err.value)


def test_a_bad_value_fails_when_the_datamodule_is_built(make_cfg):
    from wattwise.utils.instantiate import build_datamodule

    cfg = make_cfg("data.pin_memory=sometimes")
    with pytest.raises(ConfigError, match=r"data\.pin_memory"):
        build_datamodule(cfg.data)


def test_tensor_datamodule_builds_its_loaders_with_the_choice(make_cfg, monkeypatch, caplog):
    """digits on a CPU trainer: no workers, not pinned; the choice is logged once for all loaders."""
    import logging
    from types import SimpleNamespace

    import torch

    from wattwise.data import base
    from wattwise.utils.instantiate import build_datamodule

    monkeypatch.setattr(base, "available_cores", lambda: 16)
    dm = build_datamodule(make_cfg("data=digits").data)
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), is_global_zero=True
    )
    dm.setup("fit")
    with caplog.at_level(logging.INFO, logger="wattwise.data.base"):
        loaders = [dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()]
    for dl in loaders:
        assert dl.num_workers == 0 and dl.pin_memory is False and dl.persistent_workers is False
        assert dl.prefetch_factor is None
    assert len([r for r in caplog.records if "Data loaders:" in r.getMessage()]) == 1
    assert dm.loader_settings.summary_figures()["data/num_workers"] == 0


def test_tensor_datamodule_pins_on_a_cuda_trainer_and_honours_explicit_workers(make_cfg, monkeypatch):
    """The device is the attached trainer's (pinned: a fake CUDA root device); explicit workers win."""
    from types import SimpleNamespace

    import torch

    from wattwise.data import base
    from wattwise.utils.instantiate import build_datamodule

    monkeypatch.setattr(base, "available_cores", lambda: 16)
    dm = build_datamodule(make_cfg("data=digits", "data.num_workers=2").data)
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cuda", 0)), is_global_zero=True
    )
    dm.setup("fit")
    chosen = dm._current_loader_settings()
    assert chosen.pin_memory is True and chosen.num_workers == 2
    assert chosen.persistent_workers is True and chosen.prefetch_factor == 2


def test_the_datamodules_loaders_gather_whole_batches_and_give_the_same_batches():
    """BatchedTensorDataset + collate_batches: one index per tensor per batch, the batches a
    TensorDataset + default_collate loader gives (rows, order, dtypes, structure)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from wattwise.data.base import BatchedTensorDataset, collate_batches
    from wattwise.data.digits import DigitsDataModule

    x, y = torch.randn(50, 1, 4, 4), torch.randint(0, 10, (50,))
    plain = DataLoader(
        TensorDataset(x, y), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    batched = DataLoader(
        BatchedTensorDataset(x, y),
        batch_size=8,
        shuffle=True,
        generator=torch.Generator().manual_seed(3),
        collate_fn=collate_batches,
    )
    pairs = list(zip(plain, batched, strict=True))
    assert all(type(a) is type(b) is list for a, b in pairs)
    assert all(torch.equal(u, v) and u.dtype == v.dtype for a, b in pairs for u, v in zip(a, b, strict=True))
    assert collate_batches([(x[0], y[0]), (x[1], y[1])])[0].shape == (
        2,
        1,
        4,
        4,
    )  # plain samples still collate
    dm = DigitsDataModule(batch_size=16)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.dataset, BatchedTensorDataset) and loader.collate_fn is collate_batches
    xb, yb = next(iter(loader))
    assert xb.shape[0] == 16 and yb.dtype == dm.splits["train"].tensors[1].dtype
