"""GPU power-limit tuning (`+optim=power`); the callback is `wattwise.methods.power.callback.Power`.

- `settings`: the config keys `callbacks.power.*`, their defaults and checks (`PowerSettings`);
- `core`, `joint`, `callback`: the tuner (state and primitives; lending the card to the batch-size
  finder; the Lightning hooks and the profiling), acting on one `fit.FitState` per fit;
- `walk`: the profiling schedule as a state machine (states as data, one transition function);
- `profiler`: carries the walk's effects out (limits, measuring windows, samples, the decision);
- `choose`: from measured windows to a limit (Zeus's selector, confirmation, the safer limit);
- `plan`: which limits to try (the grid), the longest stretch between pauses, the dry-run plan;
- `report`: the `power/*` figures, the table row and the log lines;
- `guard`: putting the original limit back on fit end, exceptions, SIGTERM and interpreter exit;
- `status`: the values of `power/status` and the reasons it steps aside.

Shared with the batch-size finder (methods/shared): `collective`, `profile_cache`, `power_access`
and `zeus_adapter`, the one module that talks to Zeus.
"""
