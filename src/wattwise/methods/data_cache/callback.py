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

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden

from wattwise.methods.base import STATUS_ACTIVE, EnergyMethod
from wattwise.methods.data_cache import device_memory
from wattwise.methods.data_cache.materialise import CachePlan, NotCacheable, materialise, plan_cache
from wattwise.methods.data_cache.resident import ResidentLoader
from wattwise.methods.shared.settings import Check, MethodSettings, boolean, integer, number, one_of, setting

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
STAGE_SPLITS: dict[str, tuple[str, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": (),
}
DEVICES = ("auto", "cpu")
KEY = "callbacks.data_cache"


def _split_list(value: Any) -> list[Any] | None:
    """A split name or a list of them (Hydra's ListConfig included) as a list; None if neither."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, Mapping | bytes):
        return list(value)
    return None


def _splits_ok(value: Any) -> bool:
    splits = _split_list(value)
    return bool(splits) and all(s in SPLITS for s in splits)  # type: ignore[union-attr]


SPLITS_CHECK = Check(
    _splits_ok,
    f"a non-empty list of {', '.join(SPLITS)}",
    bad=([], ["train", "holdout"], 3),
    convert=lambda v: tuple(_split_list(v)),  # type: ignore[arg-type]
)


@dataclass(frozen=True)
class DataCacheSettings(MethodSettings):
    """`callbacks.data_cache.*`: the keys, their defaults and their checks (see DataCache's Args).

    The wording of the messages predates the shared validators and is kept (`memory_fraction must
    be in (0, 1]`, `seed must be an integer >= 0 or null`).
    """

    splits: tuple[str, ...] = setting(SPLITS, SPLITS_CHECK, doc="which of train, val, test to cache")
    memory_fraction: float = setting(
        0.5,
        dataclasses.replace(number(low=0, strict=True, high=1), expects="in (0, 1]"),
        doc="the cache's largest share of the device's free memory",
    )
    device: str = setting("auto", one_of(*DEVICES), doc="auto: the trainer's device; cpu: host memory")
    seed: int | None = setting(
        0,
        dataclasses.replace(integer(low=0), expects="an integer >= 0 or null"),
        optional=True,
        doc="the training split's shuffle seed (null: 0)",
    )
    drop_last: bool = setting(False, boolean(), doc="drop the last, smaller training batch")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class DataCache(EnergyMethod):
    """Serves a datamodule's splits from tensors on the training device (see the module doc).

    Args (config keys `callbacks.data_cache.*`, checked by `DataCacheSettings`):
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
        self.settings = s = DataCacheSettings.build(
            KEY, splits=splits, memory_fraction=memory_fraction, device=device, seed=seed, drop_last=drop_last
        )
        self.splits, self.memory_fraction, self.device = s.splits, s.memory_fraction, s.device
        self.seed, self.drop_last = s.seed or 0, s.drop_last
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
