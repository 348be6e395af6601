"""The parts of the energy-aware batch-size finder (`+optim=batch_size`; the callback is `callback.py`).

`candidates` (which sizes), `measure` (real steps read by the run's meter, and the DDP pooling),
`choose` (pure selection), `lr_scaling` (the learning-rate rule) and `cache` (the profile cache).
"""
