"""The parts of GPU power-limit tuning (`+optim=power`); the callback is `wattwise.optim.power_limit`.

- `status`: the values of `power/status` and the reasons it steps aside;
- `zeus_adapter`: the one module that talks to Zeus;
- `plan`: which limits to try, fitting the warm-up and profile counts into an epoch, the dry-run plan;
- `cache`: the profile cache file (key, read, write);
- `guard`: putting the original limit back on fit end, exceptions, SIGTERM and interpreter exit.
"""
