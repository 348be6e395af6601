"""Per-method settings for the contract tests: what makes a method act within a two-epoch run.

A method that is not listed here is tested with its config's own defaults, so it is covered the
moment it is registered; an entry only shortens what would not fit in a few batches.
"""

from __future__ import annotations

# train.py overrides that make the method do its work in two epochs of a few batches.
ACT_QUICKLY: dict[str, list[str]] = {
    "prune": ["callbacks.prune.start_epoch=0", "callbacks.prune.end_epoch=1"],
    "power": ["callbacks.power.warmup_steps=1", "callbacks.power.profile_steps=1"],
    # distill needs a teacher: tests/teachers.py takes every zoo task's inputs (initial weights).
    "distill": ["callbacks.distill.teacher={_target_:teachers.FlatTeacher}"],
    # tracing the int8 program takes ~10 s on the GRU; tests/test_qat.py checks the program
    "qat": ["callbacks.qat.export_program=false"],
    # two sizes far apart (per-step overhead makes the larger clearly cheaper per sample, so a resumed
    # run's saved choice equals an uninterrupted run's), one warm-up and one measured step each
    "batch_size": [
        "callbacks.batch_size.candidates=[8,64]",
        "callbacks.batch_size.min_steps_per_epoch=2",
        "callbacks.batch_size.warmup_steps=1",
        "callbacks.batch_size.measure_steps=1",
        "callbacks.batch_size.profile_dir=null",
    ],
}

# One bad value per method and the key its one-line error must name. A method not listed is
# checked with the contract's own key, if_not_applicable.
BAD_SETTING: dict[str, tuple[str, str]] = {
    "amp": ("callbacks.amp.precision=fp8", "callbacks.amp.precision"),
    "early_stop": ("callbacks.early_stop.window=0", "callbacks.early_stop.window"),
    "prune": ("callbacks.prune.ratio=1.5", "callbacks.prune.ratio"),
    "power": ("callbacks.power.eta=2", "callbacks.power.eta"),
    "distill": ("callbacks.distill.temperature=0", "callbacks.distill.temperature"),
    "batch_size": ("callbacks.batch_size.max_memory_fraction=2", "callbacks.batch_size.max_memory_fraction"),
}
