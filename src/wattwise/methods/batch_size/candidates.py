"""Which batch sizes to try: powers of two within bounds, the configured size, an epoch long enough.

A batch size is only worth trying if one rank's epoch still holds `min_steps_per_epoch` batches of
it: larger batches give fewer optimizer steps per epoch, and an epoch of two steps is no longer the
same training. Pure: the caller passes the train set's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CandidatePlan:
    """The sizes to measure (ascending) and the ones left out, each with the reason."""

    sizes: tuple[int, ...]
    dropped: dict[int, str] = field(default_factory=dict)
    cap: int | None = None  # the largest size an epoch allows (None: the train set's size is unknown)


def powers_of_two(low: int, high: int) -> list[int]:
    """Every power of two in [low, high]."""
    out, b = [], 1
    while b <= high:
        if b >= low:
            out.append(b)
        b *= 2
    return out


def plan_candidates(
    spec: str | Sequence[int],
    configured: int,
    min_batch_size: int,
    max_batch_size: int,
    samples_per_rank: int | None,
    min_steps_per_epoch: int,
) -> CandidatePlan:
    """`auto`: powers of two in [min, max] and `configured`; a list: its sizes. Both capped by the epoch."""
    if spec == "auto":
        wanted = set(powers_of_two(min_batch_size, max_batch_size)) | {configured}
    else:
        wanted = {int(b) for b in spec}
    cap = samples_per_rank // min_steps_per_epoch if samples_per_rank is not None else None
    sizes, dropped = [], {}
    for b in sorted(wanted):
        if cap is not None and b > cap:
            dropped[b] = (
                f"an epoch of {samples_per_rank} samples per rank would have under "
                f"{min_steps_per_epoch} batches (min_steps_per_epoch)"
            )
        else:
            sizes.append(b)
    return CandidatePlan(sizes=tuple(sizes), dropped=dropped, cap=cap)
