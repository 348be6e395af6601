"""+optim=data_cache: what the resident loader and the method promise.

Every sample once per epoch in the datamodule's batch size, reshuffled per epoch and the same for
a seed, disjoint shards over two real gloo processes, data that does not fit refused in one line
(or skipped with the datamodule's own loaders), map-style datasets cached exactly, random
augmentation refused, and a real fit that sees the same training samples as without the cache.
Free memory is always pinned (never the host's).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import ROOT, run_cli, run_two_gloo_ranks, train_in_process
from torch.utils._pytree import tree_flatten
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from wattwise.methods.base import NotApplicableError
from wattwise.methods.data_cache import device_memory
from wattwise.methods.data_cache.callback import DataCache
from wattwise.methods.data_cache.materialise import NotCacheable, materialise, plan_cache
from wattwise.methods.data_cache.resident import ResidentLoader
from wattwise.utils.errors import ConfigError

HELPERS_ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}


def id_loader(n: int, batch_size: int, **kw) -> ResidentLoader:
    """A resident loader whose x encodes each sample's index (x[i] = i, y[i] = i)."""
    ids = torch.arange(n)
    _, spec = tree_flatten([ids, ids])
    return ResidentLoader([ids.float().unsqueeze(1), ids], spec, batch_size, **kw)


def epoch_ids(loader: ResidentLoader, epoch: int) -> list[int]:
    loader.sampler.set_epoch(epoch)
    return [int(v) for x, _ in loader for v in x[:, 0]]


# ---- the resident loader ---------------------------------------------------------------------
@pytest.mark.parametrize(("n", "bs", "drop_last"), [(100, 32, False), (100, 32, True), (96, 32, False)])
def test_every_sample_once_per_epoch_in_batches_of_the_batch_size(n, bs, drop_last):
    loader = id_loader(n, bs, shuffle=True, seed=0, drop_last=drop_last)
    sizes = [len(y) for _, y in loader]
    ids = epoch_ids(loader, 0)
    if drop_last:
        assert sizes == [bs] * (n // bs) and len(loader) == n // bs
        assert len(set(ids)) == len(ids) == (n // bs) * bs  # no repeats; only the tail is dropped
    else:
        assert Counter(ids) == Counter(range(n))  # the multiset of samples is the dataset
        assert sizes[:-1] == [bs] * (len(sizes) - 1) and sizes[-1] == n - bs * (len(sizes) - 1)
        assert len(loader) == len(sizes)


def test_batches_keep_the_datasets_structure_and_pairing():
    loader = id_loader(50, 7, shuffle=True, seed=1)
    for x, y in loader:
        assert isinstance(loader_batch := [x, y], list) and x.shape[1:] == (1,)
        assert torch.equal(loader_batch[0][:, 0].long(), y)  # inputs and labels gathered by the same index


def test_reshuffles_per_epoch_and_is_deterministic_for_a_seed():
    loader = id_loader(64, 16, shuffle=True, seed=5)
    e0, e1, e0_again = epoch_ids(loader, 0), epoch_ids(loader, 1), epoch_ids(loader, 0)
    assert e0 != e1 and sorted(e0) == sorted(e1)
    assert e0 == e0_again
    assert epoch_ids(id_loader(64, 16, shuffle=True, seed=5), 1) == e1  # a new loader, same seed
    assert epoch_ids(id_loader(64, 16, shuffle=True, seed=6), 1) != e1
    assert epoch_ids(id_loader(64, 16, shuffle=False), 3) == list(range(64))  # eval splits: in order


@pytest.mark.slow
def test_two_gloo_processes_get_disjoint_shards_that_cover_the_data(tmp_path):
    run_two_gloo_ranks("data_cache_helpers", tmp_path)
    cases = json.loads((tmp_path / "shards.json").read_text())

    even = cases["even"]  # 100 over 2 ranks: disjoint halves, together every sample once
    a, b = even["ranks"]
    assert len(a) == len(b) == 50 and not set(a) & set(b) and sorted(a + b) == list(range(100))
    assert even["batches"] == 7  # ceil(50 / 8) per rank

    odd = cases["odd"]  # 101: DistributedSampler pads to 102 by repeating the first index of the order
    a, b = odd["ranks"]
    assert len(a) == len(b) == 51 and set(a) | set(b) == set(range(101))
    assert len(set(a) & set(b)) == 1 and len(a + b) - 101 == 1

    dropped = cases["odd_drop_last"]  # drop_last: evened by dropping one sample, no sample twice
    a, b = dropped["ranks"]
    assert len(a) == len(b) == 48  # 50 per rank, then the last partial batch of 2 dropped
    assert not set(a) & set(b)


# ---- reading datasets -------------------------------------------------------------------------
class PairDataset(Dataset):
    """A user's map-style dataset: (float tensor, int label) per sample, computed on read."""

    def __init__(self, n: int = 37) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.full((3,), float(i)) * torch.tensor([1.0, -1.0, 0.5]), i % 5


class AugmentedDataset(PairDataset):
    def __getitem__(self, i: int):
        x, y = super().__getitem__(i)
        return x + torch.randn(3), y  # a new draw on every read


class Stream(IterableDataset):
    def __iter__(self):
        yield from range(4)


def test_a_map_style_dataset_is_cached_batch_for_batch_like_its_dataloader():
    dl = DataLoader(PairDataset(), batch_size=8)
    plan = plan_cache("val", dl)
    assert not plan.exact and plan.nbytes == 37 * (3 * 4 + 8)  # sample 0's leaves x length
    leaves, spec = materialise(plan, torch.device("cpu"))
    resident = ResidentLoader(leaves, spec, plan.batch_size, shuffle=plan.shuffle)
    ours, theirs = list(resident), list(dl)
    assert len(ours) == len(theirs) == len(resident) == 5
    for mine, real in zip(ours, theirs, strict=True):
        assert type(mine) is type(real)  # a list, as default_collate makes of a tuple sample
        assert all(torch.equal(m, r) and m.dtype == r.dtype for m, r in zip(mine, real, strict=True))


def test_a_tensor_dataset_is_served_in_place_on_the_cpu_and_priced_exactly():
    x, y = torch.randn(20, 4), torch.arange(20)
    plan = plan_cache("train", DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True))
    assert plan.exact and plan.nbytes == x.nbytes + y.nbytes and plan.shuffle
    leaves, _ = materialise(plan, torch.device("cpu"))
    assert leaves[0].data_ptr() == x.data_ptr()  # no copy


def test_a_subset_of_a_tensor_dataset_is_indexed():
    x = torch.arange(10).float()
    subset = torch.utils.data.Subset(TensorDataset(x, x.long()), [7, 2, 5])
    leaves, _ = materialise(plan_cache("val", DataLoader(subset, batch_size=2)), torch.device("cpu"))
    assert leaves[1].tolist() == [7, 2, 5]


@pytest.mark.parametrize(
    ("loader", "words"),
    [
        (DataLoader(AugmentedDataset(), batch_size=4), "change between reads (random augmentation?)"),
        (DataLoader(Stream(), batch_size=2), "iterable dataset, which has no length to cache"),
        (DataLoader(PairDataset(), batch_size=4, collate_fn=lambda b: b), "its own collate_fn"),
        ([1, 2], "not a DataLoader"),
    ],
)
def test_what_cannot_be_cached_faithfully_is_refused_with_the_reason(loader, words):
    with pytest.raises(NotCacheable, match=words.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        plan_cache("train", loader)


# ---- the method on a datamodule ---------------------------------------------------------------
class UserDataModule(L.LightningDataModule):
    """A user's datamodule over a map-style dataset (not a TensorDataset)."""

    def __init__(self, dataset: Dataset, batch_size: int = 8) -> None:
        super().__init__()
        self.dataset, self.batch_size = dataset, batch_size

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.dataset, batch_size=16)


def fake_trainer(dm, world_size: int = 1, rank: int = 0):
    strategy = SimpleNamespace(root_device=torch.device("cpu"), reduce_boolean_decision=lambda d, all=True: d)
    return SimpleNamespace(
        datamodule=dm, strategy=strategy, world_size=world_size, global_rank=rank, is_global_zero=rank == 0
    )


def test_the_train_loader_takes_the_datamodules_batch_size_when_it_is_asked_for(monkeypatch):
    monkeypatch.setattr(device_memory, "free_bytes", lambda device: 1 << 30)
    dm = UserDataModule(PairDataset(), batch_size=8)
    method = DataCache(seed=0)
    method.setup(fake_trainer(dm), None, "fit")
    assert method.status == "active" and isinstance(dm.train_dataloader(), ResidentLoader)
    dm.batch_size = 5  # e.g. a batch-size finder, after setup and before the loaders are built
    assert [len(y) for _, y in dm.train_dataloader()] == [5] * 7 + [2]
    assert [len(y) for _, y in dm.val_dataloader()] == [16, 16, 5]  # eval: its loader's own size
    method.teardown(fake_trainer(dm), None, "fit")
    assert isinstance(dm.train_dataloader(), DataLoader)  # its own loaders back
    figures = method.summary_figures()
    assert figures["data_cache/splits"] == "train+val" and figures["data_cache/bytes"] == 2 * 37 * 20


def test_an_augmented_dataset_is_refused_or_skipped_with_its_own_loaders_kept(monkeypatch):
    monkeypatch.setattr(device_memory, "free_bytes", lambda device: 1 << 30)
    dm = UserDataModule(AugmentedDataset())
    with pytest.raises(NotApplicableError, match="random augmentation"):
        DataCache().setup(fake_trainer(dm), None, "fit")
    method = DataCache(if_not_applicable="skip")
    method.setup(fake_trainer(dm), None, "fit")
    assert method.status == "skipped" and "caching would freeze them" in method.skipped_reason
    assert isinstance(dm.train_dataloader(), DataLoader)


def test_no_datamodule_steps_aside():
    method = DataCache(if_not_applicable="skip")
    method.setup(fake_trainer(None), None, "fit")
    assert method.status == "skipped" and "no datamodule" in method.skipped_reason


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"memory_fraction": 0}, "memory_fraction"),
        ({"memory_fraction": 1.5}, "memory_fraction"),
        ({"device": "tpu"}, "device"),
        ({"splits": ["train", "holdout"]}, "splits"),
        ({"seed": -1}, "seed"),
        ({"drop_last": "yes"}, "drop_last"),
    ],
)
def test_bad_settings_fail_in_one_line_naming_the_key(kw, key):
    with pytest.raises(ConfigError, match=rf"callbacks\.data_cache\.{key}") as err:
        DataCache(**kw)
    assert "\n" not in str(err.value)


# ---- real runs ----------------------------------------------------------------------------------
def test_data_that_does_not_fit_stops_a_run_in_one_line(tmp_path):
    proc = run_cli(
        [
            "+optim=data_cache",
            "+callbacks.small_memory._target_=data_cache_helpers.SmallFreeMemory",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "cpu_threads=1",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
        env=HELPERS_ENV,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("wattwise: error: +optim=data_cache does not apply here: the train + val data")
    assert "does not fit in 0.5 x the 4.0 KiB free on cpu" in lines[0]
    assert "callbacks.data_cache.memory_fraction" in lines[0]
    assert "callbacks.data_cache.if_not_applicable=skip" in lines[0]


def test_with_skip_a_run_that_does_not_fit_trains_on_its_own_loaders(tmp_path, monkeypatch):
    monkeypatch.setattr(device_memory, "free_bytes", lambda device: 4096)
    summary, _ = train_in_process(
        tmp_path,
        [
            "+optim=data_cache",
            "callbacks.data_cache.if_not_applicable=skip",
            "+callbacks.count._target_=data_cache_helpers.SampleCounter",
        ],
    )
    assert summary["status"] == "completed"
    assert summary["data_cache/status"] == "skipped" and "does not fit" in summary["data_cache/skipped"]
    assert summary["test/train_samples"] == 3 * 64  # SMALL: 3 batches of digits' 64, from its DataLoader
    assert summary["test/train_loader"] == "DataLoader"
    assert "data_cache/bytes" not in summary


def test_a_fit_with_the_cache_sees_the_same_training_samples_as_without(tmp_path, monkeypatch):
    """A whole digits epoch (last batch partial) with and without the cache: same samples, same labels."""
    monkeypatch.setattr(device_memory, "free_bytes", lambda device: 1 << 30)
    common = [
        "++trainer.limit_train_batches=1.0",
        "+callbacks.count._target_=data_cache_helpers.SampleCounter",
    ]
    plain, _ = train_in_process(tmp_path / "plain", common)
    cached, _ = train_in_process(tmp_path / "cached", [*common, "+optim=data_cache"])
    assert cached["status"] == plain["status"] == "completed"
    assert cached["test/train_samples"] == plain["test/train_samples"] == 1797 - 270 - 270
    assert cached["test/train_labels"] == plain["test/train_labels"]
    assert cached["global_step"] == plain["global_step"]
    assert (plain["test/train_loader"], cached["test/train_loader"]) == ("DataLoader", "ResidentLoader")
    assert cached["data_cache/status"] == "active"
    assert cached["data_cache/splits"] == "train+val+test" and cached["data_cache/device"] == "cpu"
    assert cached["data_cache/bytes"] == 1797 * (64 * 4 + 8)  # every split: float 8x8 inputs + int64 labels
    assert cached["data_cache/free_bytes"] == 1 << 30 and cached["data_cache/build_s"] >= 0


def test_distillation_reads_the_cached_training_set_and_still_acts(tmp_path):
    """distill reads `trainer.train_dataloader.dataset` (its teacher-logit cache hashes the samples):
    the resident loader keeps the dataset it was read from, so both act in one run."""
    from test_contract import RUN, _quick
    from zoo import ZOO

    summary, _ = train_in_process(
        tmp_path,
        [
            *RUN,
            *ZOO["cnn1d"],
            "+optim=[data_cache,distill]",
            *_quick("data_cache", "distill"),
            "callbacks.distill.cache=true",
            f"callbacks.distill.cache_dir={tmp_path}/logits",
        ],
    )
    assert summary["status"] == "completed"
    assert summary["data_cache/status"] == "active" and summary["distill/status"] == "active"
    assert summary["distill/cached"] is True
