"""The parts of `+optim=distill` (the callback is `wattwise.methods.distill.callback.Distill`).

- `loss`: the Hinton distillation loss, a pure function;
- `teacher`: building the teacher from a wattwise run, a `.ckpt` or a `_target_` node, and checking
  it against the task;
- `cache`: the teacher's logits for the training set, keyed by each sample's content, stored once;
- `accounting`: what the teacher costs and when distillation pays for itself (the break-even).
"""
