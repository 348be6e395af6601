"""Hydra finds sweepers only in the `hydra_plugins` namespace: this names wattwise's comparison sweeper
there (`hydra/sweeper=compare`, conf/hydra/sweeper/compare.yaml). The code is `wattwise.sweeper`."""
