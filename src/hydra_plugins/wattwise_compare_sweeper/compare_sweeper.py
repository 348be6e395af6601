"""`hydra/sweeper=compare`: see `wattwise.sweeper.CompareSweeper`."""

from wattwise.sweeper import CompareSweeper as _CompareSweeper


class CompareSweeper(_CompareSweeper):
    """The comparison sweeper, registered where Hydra looks for plugins."""
