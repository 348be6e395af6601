"""Device-resident data cache (`+optim=data_cache`); card: the card (methods/data_cache/README.md).

Method card
-----------
What it does
    When a stage starts (fit, validate, test), it asks the datamodule's own loaders once for
    their data, reads each split into whole tensors (a `TensorDataset`'s tensors as they are;
    any other map-style dataset sample by sample, once, collated as the DataLoader would) and
    puts them on the training device. From then on the datamodule's `train_dataloader` /
    `val_dataloader` / `test_dataloader` return a `ResidentLoader` (wattwise.methods.data_cache.resident)
    that builds each batch on the device with one index gather per tensor: no per-sample
    Python, no collate, no host-to-device copy per step. Samples are drawn by torch's own
    `DistributedSampler` (reshuffled per epoch by `set_epoch`, which Lightning calls; one
    disjoint shard per rank under DDP). The training batch size is the datamodule's
    `batch_size` when the loader is asked for, so a batch-size finder that sets it first is
    obeyed; validation and test keep their loaders' batch sizes.
What it saves
    The per-step cost of feeding the device: the loader's per-sample indexing and stacking and
    the host-to-device copy, which on small nets is a large share of a step (and of the energy
    a GPU spends waiting). Unmeasured here; `make bench` compares it with the baseline.
What it costs
    Device memory for the whole cached data (checked before anything is copied: at most
    `memory_fraction` x the device's free memory), and the one-off read and copy at each
    stage's start (`data_cache/build_s`). On the CPU a TensorDataset is served in place.
When it steps aside
    No datamodule (loaders given to `fit` directly); a loader that is not a DataLoader over a
    map-style dataset, or has its own sampler, batch sampler or collate_fn; samples that change
    between two reads (random augmentation); data larger than `memory_fraction` x free memory.
    With `if_not_applicable: fail` (the default) the run stops in one line; with `skip` (as in
    `+optim=green`) the datamodule's own loaders stay and the reason is recorded.
When not to use it
    Random augmentation per epoch (the cache would freeze one draw: it refuses), data larger
    than the device's memory, and tiny runs where building the cache costs more than it saves.
How it composes
    Works for any LightningDataModule whose loaders are DataLoaders over map-style datasets.
    DDP: shards by rank (DistributedSampler semantics: the last indices repeat to even the
    shards, as Lightning's own sampler does), so the energy monitor's per-rank sample counts
    still add up to the epoch's samples. A batch-size finder that sets
    `datamodule.batch_size` before the loaders are built is read at that time. Pruning, amp and
    QAT see ordinary batches (amp's channels_last converts the inputs as before).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden

from wattwise.methods.base import STATUS_ACTIVE, EnergyMethod
from wattwise.methods.data_cache import device_memory
from wattwise.methods.data_cache.materialise import CachePlan, NotCacheable, materialise, plan_cache
from wattwise.methods.data_cache.resident import ResidentLoader
from wattwise.utils.errors import ConfigError, require_int

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
STAGE_SPLITS: dict[str, tuple[str, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": (),
}
DEVICES = ("auto", "cpu")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class DataCache(EnergyMethod):
    """Serves a datamodule's splits from tensors on the training device (see the module doc).

    Args (config keys `callbacks.data_cache.*`):
        splits: which of train, val, test to cache.
        memory_fraction: the cache may take at most this share of the device's free memory, in (0, 1].
        device: `auto` (the trainer's root device) or `cpu` (host memory, batches copied per step).
        seed: the shuffle seed of the training split (per epoch: seed + epoch, DistributedSampler's).
        drop_last: drop the last, smaller training batch (and even the shards by dropping, not padding).
        if_not_applicable: `fail` or `skip` where it cannot cache (see `wattwise.methods.base`).
    """

    name: ClassVar[str] = "data_cache"
    figure_prefix: ClassVar[str] = "data_cache/"
    summary_keys: ClassVar[tuple[str, ...]] = (
        "data_cache/status",
        "data_cache/bytes",
        "data_cache/device",
        "data_cache/splits",
    )
    recipes: ClassVar[Mapping[str, Mapping[str, Any]]] = {"green": {}}

    def __init__(
        self,
        splits: Sequence[str] = SPLITS,
        memory_fraction: float = 0.5,
        device: str = "auto",
        seed: int | None = 0,
        drop_last: bool = False,
        if_not_applicable: str = "fail",
    ) -> None:
        super().__init__(if_not_applicable=if_not_applicable)
        splits = [splits] if isinstance(splits, str) else list(splits)
        unknown = [s for s in splits if s not in SPLITS]
        if unknown or not splits:
            raise ConfigError(
                f"callbacks.data_cache.splits must be a non-empty list of {', '.join(SPLITS)}, got {splits}"
            )
        if isinstance(memory_fraction, bool) or not 0.0 < float(memory_fraction) <= 1.0:
            raise ConfigError(
                f"callbacks.data_cache.memory_fraction must be in (0, 1], got {memory_fraction}"
            )
        if device not in DEVICES:
            raise ConfigError(f"callbacks.data_cache.device must be auto or cpu, got {device!r}")
        require_int("callbacks.data_cache.seed", seed, 0, allow_none=True)
        if not isinstance(drop_last, bool):
            raise ConfigError(f"callbacks.data_cache.drop_last must be true or false, got {drop_last!r}")
        self.splits = tuple(splits)
        self.memory_fraction = float(memory_fraction)
        self.device = device
        self.seed = seed or 0
        self.drop_last = drop_last
        self._cached: dict[str, tuple[list[torch.Tensor], Any, CachePlan]] = {}
        self._replaced: dict[str, tuple[L.LightningDataModule, Any]] = {}  # split -> (dm, prior attribute)
        self._bytes: dict[str, int] = {}
        self._device_name = device
        self._free_bytes: int | None = None
        self._build_s = 0.0

    # ---- building ------------------------------------------------------------------------------
    def _target_device(self, trainer: L.Trainer) -> torch.device:
        return torch.device("cpu") if self.device == "cpu" else trainer.strategy.root_device

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not self.active:
            return
        dm = trainer.datamodule
        if dm is None:
            self.step_aside(
                "the run has no datamodule (loaders were given to fit directly); "
                "the cache serves a LightningDataModule's loaders",
                trainer,
            )
            return
        wanted = [
            s
            for s in STAGE_SPLITS.get(stage, ())
            if s in self.splits and s not in self._replaced and is_overridden(f"{s}_dataloader", dm)
        ]
        if not wanted:
            return
        started = time.perf_counter()
        device = self._target_device(trainer)
        try:
            plans = [plan_cache(s, self._original(dm, s)()) for s in wanted]
            free = device_memory.free_bytes(device)
        except (NotCacheable, ValueError) as err:
            self.step_aside(str(err), trainer)
            return
        need = sum(p.nbytes for p in plans)
        fits = need <= self.memory_fraction * free
        fits = bool(trainer.strategy.reduce_boolean_decision(fits, all=True))  # every rank, or none
        if not fits:
            estimated = "" if all(p.exact for p in plans) else ", estimated from sample 0"
            self.step_aside(
                f"the {' + '.join(wanted)} data ({human_bytes(need)}{estimated}) does not fit in "
                f"{self.memory_fraction:g} x the {human_bytes(free)} free on {device} "
                "(callbacks.data_cache.memory_fraction)",
                trainer,
            )
            return
        for p in plans:
            leaves, spec = materialise(p, device)
            self._cached[p.split] = (leaves, spec, p)
            self._bytes[p.split] = sum(t.nbytes for t in leaves)
            self._install(trainer, dm, p.split)
        self._build_s += time.perf_counter() - started
        self._device_name, self._free_bytes = str(device), int(free)
        self.status = STATUS_ACTIVE
        if trainer.is_global_zero:
            log.info(
                "data_cache: %s cached on %s (%s of %s free) in %.2f s",
                "+".join(wanted),
                device,
                human_bytes(sum(self._bytes[s] for s in wanted)),
                human_bytes(free),
                time.perf_counter() - started,
            )

    @staticmethod
    def _original(dm: L.LightningDataModule, split: str) -> Any:
        """The datamodule's own loader method (an attribute set on the instance wins, as in Python)."""
        return getattr(dm, f"{split}_dataloader")

    def _install(self, trainer: L.Trainer, dm: L.LightningDataModule, split: str) -> None:
        attr = f"{split}_dataloader"
        self._replaced[split] = (dm, dm.__dict__.get(attr, _ABSENT))

        def resident_dataloader() -> ResidentLoader:
            leaves, spec, plan = self._cached[split]
            batch_size, drop_last = plan.batch_size, plan.drop_last
            if split == "train":  # read now: a batch-size finder may have set it since setup
                current = getattr(dm, "batch_size", None)
                if isinstance(current, int) and not isinstance(current, bool) and current >= 1:
                    batch_size = current
                drop_last = drop_last or self.drop_last
            return ResidentLoader(
                leaves,
                spec,
                batch_size,
                shuffle=plan.shuffle,
                seed=self.seed,
                drop_last=drop_last,
                num_replicas=trainer.world_size,
                rank=trainer.global_rank,
                dataset=plan.dataset,
            )

        setattr(dm, attr, resident_dataloader)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Give the datamodule its own loaders back and free the device copies."""
        for split, (dm, prior) in self._replaced.items():
            attr = f"{split}_dataloader"
            if prior is _ABSENT:
                dm.__dict__.pop(attr, None)
            else:
                setattr(dm, attr, prior)
        self._replaced.clear()
        self._cached.clear()

    # ---- results -------------------------------------------------------------------------------
    def method_figures(self) -> dict[str, Any]:
        return {
            "data_cache/bytes": int(sum(self._bytes.values())),
            "data_cache/device": self._device_name,
            "data_cache/splits": "+".join(s for s in SPLITS if s in self._bytes),
            "data_cache/free_bytes": self._free_bytes,
            "data_cache/build_s": round(self._build_s, 4),
        }

    @classmethod
    def report_rows(cls, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        rows = super().report_rows(summary)
        if summary.get("data_cache/splits"):
            rows.append(
                (
                    "data cache",
                    f"{summary['data_cache/splits']}: {human_bytes(summary.get('data_cache/bytes') or 0)} "
                    f"on {summary.get('data_cache/device')}",
                )
            )
        return rows


_ABSENT = object()
