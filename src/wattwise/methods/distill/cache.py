"""The teacher's logits for the training set, computed once and looked up by each sample's content.

Why content, not an index: every bundled datamodule (and most users') serves a `TensorDataset`
through a shuffling DataLoader, so a batch carries no sample index; wrapping the dataset to return
one would change what every datamodule yields. Instead each sample's bytes are hashed on its
device (a 64-bit multiply-add hash over the sample's raw bits: integer arithmetic, so the same on
CPU and GPU and independent of the order of the sum) and looked up with `searchsorted` in a sorted
key table, with no host sync per step. Shuffling, batch size and sweeps' job order then do not
matter, duplicates are harmless (equal inputs, equal teacher logits), and a sample the cache does
not hold (other data, a random augmentation) is caught at the step it appears, not silently served
someone else's logits.

The file lives next to the teacher, named by the teacher's weights hash, the training set's content
hash (the sorted keys) and the device and precision the logits were computed under (so a cached
run is exactly an uncached one); written to a temporary file and renamed, so parallel sweep jobs
never read a half-written cache (two jobs building at once write the same bytes).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wattwise.utils.errors import ConfigError
from wattwise.utils.safe_load import load_checkpoint

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_COEFFS: dict[tuple[int, str], torch.Tensor] = {}


def _coefficients(width: int, device: torch.device) -> torch.Tensor:
    """Fixed odd pseudo-random 64-bit multipliers, one per position of a flattened sample."""
    key = (width, str(device))
    if key not in _COEFFS:
        g = torch.Generator().manual_seed(0x5EED)
        c = torch.randint(-(2**62), 2**62, (width,), generator=g, dtype=torch.int64) * 2 + 1
        _COEFFS[key] = c.to(device)
    return _COEFFS[key]


def sample_keys(x: torch.Tensor) -> torch.Tensor:
    """One int64 key per sample of a batch, from the sample's raw bits (see the module docstring)."""
    flat = x.detach().reshape(x.shape[0], -1).contiguous()
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    bits = flat.view(_INT_VIEW[flat.element_size()]).to(torch.int64)
    h = (bits * _coefficients(bits.shape[1], bits.device)).sum(dim=1)  # wraps mod 2^64: exact
    return h ^ (h >> 29)


def data_sha256(sorted_keys: torch.Tensor) -> str:
    """The training set's identity: a hash of its sorted sample keys (order-free, content-exact)."""
    return hashlib.sha256(sorted_keys.cpu().numpy().tobytes()).hexdigest()


def cache_path(cache_dir: Path, teacher_sha: str, data_sha: str, device: str, precision: str) -> Path:
    safe = precision.replace("/", "_")
    return cache_dir / f"teacher-logits_{teacher_sha[:16]}_data-{data_sha[:16]}_{device}_{safe}.pt"


def check_repeatable(dataset: Any, n: int = 4) -> None:
    """The dataset gives the same sample twice (no random augmentation), or one line refusing the cache."""
    with torch.random.fork_rng(devices=[]):
        for i in range(min(n, len(dataset))):
            a, b = dataset[i], dataset[i]
            xa, xb = (a[0], b[0]) if isinstance(a, list | tuple) else (a, b)
            if isinstance(xa, torch.Tensor) and not torch.equal(xa, xb):
                raise ConfigError(
                    "callbacks.distill.cache=true: the training set returned sample "
                    f"{i} differently on two reads (random augmentation?), so logits cached for one "
                    "read would be wrong for the next; set callbacks.distill.cache=false"
                )


@dataclass
class LogitCache:
    """Sorted sample keys and the teacher's logits in the same order, on the training device."""

    keys: torch.Tensor  # (N,) int64, sorted
    logits: torch.Tensor  # (N, classes) float32
    meta: dict[str, Any]

    def lookup(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for a batch; one line when a sample is not in the cache."""
        k = sample_keys(x)
        pos = torch.searchsorted(self.keys, k).clamp_(max=len(self.keys) - 1)
        if not bool((self.keys[pos] == k).all()):  # one small sync per step on a GPU
            raise ConfigError(
                "callbacks.distill.cache: a training sample is not in the teacher's cached logits "
                "(the data changed, or it is augmented at random); set callbacks.distill.cache=false"
            )
        return self.logits[pos]

    def to(self, device: torch.device) -> LogitCache:
        return LogitCache(self.keys.to(device), self.logits.to(device), self.meta)


def build(
    batches: Iterable[torch.Tensor], forward: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted keys, logits) over every input batch, deduplicated by key."""
    keys, logits = [], []
    for x in batches:
        keys.append(sample_keys(x).cpu())
        logits.append(forward(x).float().cpu())
    k, lg = torch.cat(keys), torch.cat(logits)
    order = torch.argsort(k)
    k, lg = k[order], lg[order]
    keep = torch.ones_like(k, dtype=torch.bool)
    keep[1:] = k[1:] != k[:-1]
    return k[keep], lg[keep]


def sorted_unique_keys(batches: Iterable[torch.Tensor]) -> torch.Tensor:
    k = torch.cat([sample_keys(x).cpu() for x in batches])
    return torch.unique(k)  # sorted


def load(path: Path) -> LogitCache | None:
    """The cached logits, or None (missing; damaged or another format: warned once, built again).

    Read with weights_only=True: a cache is tensors and plain metadata, and one that holds more is
    refused (ConfigError naming trust_checkpoint), like any checkpoint a run is handed."""
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path, "callbacks.distill.cache")
        if not isinstance(state, dict) or state.get("format") != CACHE_FORMAT:
            raise ValueError("not a logit cache of this format")
        keys, logits, meta = state["keys"], state["logits"], state["meta"]
        tensors = isinstance(keys, torch.Tensor) and isinstance(logits, torch.Tensor)
        if not tensors or not isinstance(meta, dict):
            raise ValueError("its keys, logits or metadata have the wrong types")
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated, not a torch file: a cache is rebuilt, not fatal
        log.warning("Ignoring the unreadable teacher-logit cache %s (%s); building it again.", path, err)
        return None
    return LogitCache(keys, logits, dict(meta))


def save(path: Path, cache: LogitCache) -> None:
    """Write to a temporary file in the same folder, then rename: readers see all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".pt.tmp")
    os.close(fd)
    try:
        torch.save(
            {
                "format": CACHE_FORMAT,
                "keys": cache.keys.cpu(),
                "logits": cache.logits.cpu(),
                "meta": cache.meta,
            },
            tmp,
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
