"""The parts of GPU power-limit tuning (`+optim=power`); the callback is `wattwise.methods.power.callback`.

- `status`: the values of `power/status` and the reasons it steps aside;
- `zeus_adapter`: the one module that talks to Zeus;
- `plan`: which limits to try (the grid), the longest stretch between pauses, the dry-run plan;
- `profiler`: the schedule of warm-up and measured batches, pausing at validation and epoch ends;
- `choose`: from measured windows to a limit (Zeus's selector, confirmation, the safer limit);
- `collective`: pooling the ranks' measurements and broadcasting rank 0's decision under DDP;
- `cache`: the profile cache file (key, read, write);
- `guard`: putting the original limit back on fit end, exceptions, SIGTERM and interpreter exit.
"""
