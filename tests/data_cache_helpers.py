"""Test helpers for +optim=data_cache (tests/ must be on PYTHONPATH): a small-memory device, a
training-sample counter, and one rank of the two-process sharding test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch


class SmallFreeMemory(L.Callback):
    """Pins the free memory the data cache sees to `free_bytes` (built before the fit: in time)."""

    def __init__(self, free_bytes: int = 4096) -> None:
        from wattwise.methods.data_cache import device_memory

        device_memory.free_bytes = lambda device: free_bytes


class SampleCounter(L.Callback):
    """Counts the training samples the module saw and their labels; reported as test/* figures."""

    def __init__(self) -> None:
        self.samples = 0
        self.labels: dict[int, int] = {}
        self.loader = ""

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ):
        self.loader = type(trainer.train_dataloader).__name__
        y = batch[1]
        self.samples += len(y)
        for label in y.tolist():
            self.labels[label] = self.labels.get(label, 0) + 1

    def summary_figures(self) -> dict[str, Any]:
        return {
            "test/train_samples": self.samples,
            "test/train_labels": dict(sorted(self.labels.items())),
            "test/train_loader": self.loader,
        }


def ddp_child(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One gloo rank: resident loaders over ids 0..n-1 for world_size ranks; rank 0 writes all ranks' ids."""
    import torch.distributed as dist
    from torch.utils._pytree import tree_flatten

    from wattwise.methods.data_cache.resident import ResidentLoader

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        cases = {"even": (100, False), "odd": (101, False), "odd_drop_last": (101, True)}
        result: dict[str, Any] = {}
        for name, (n, drop_last) in cases.items():
            ids = torch.arange(n)
            _, spec = tree_flatten([ids, ids])
            loader = ResidentLoader(
                [ids.float(), ids],
                spec,
                8,
                shuffle=True,
                seed=3,
                drop_last=drop_last,
                num_replicas=world_size,
                rank=rank,
            )
            loader.sampler.set_epoch(1)
            mine = [int(i) for x, y in loader for i in y]
            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, mine)
            result[name] = {"n": n, "ranks": gathered, "batches": len(loader)}
        if rank == 0:
            (Path(out_dir) / "shards.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
