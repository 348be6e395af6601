"""The parts of `+optim=prune` (the callback is `wattwise.methods.prune.callback.Prune`).

- `schedule`: how much of the final ratio each prune reaches;
- `structure`: tensor shapes in checkpoints, resizing a net to them, layers' size attributes;
- `surgery`: pruning one channel group, swapping the new tensors into the optimizer with sliced state;
- `inputs`: the real samples the net is traced with;
- `export`: the inference files written at fit end;
- `tp_adapter`: the only module that imports torch-pruning.
"""
