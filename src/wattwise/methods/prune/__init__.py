"""The parts of `+optim=prune` (the callback is `wattwise.methods.prune.callback.Prune`; card: README.md).

- `settings`: the `callbacks.prune.*` keys, defaults and checks (`PruneSettings`);
- `pruner`: building the pruner at fit start, the layers left alone, the ratio a MACs target needs;
- `step`: one scheduled prune (rank 0's choice applied everywhere) and the Taylor gradients;
- `guard`: the trial prune at fit start, the check after each prune and the rollback;
- `schedule`: how much of the final ratio each prune reaches;
- `surgery`: pruning one channel group, swapping the new tensors into the optimizer with sliced state;
- `tp_adapter`: the only module that imports torch-pruning.

Tensor shapes in checkpoints, the tracing inputs and the export are shared (`methods/shared/`).
"""
