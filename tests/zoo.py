"""The zoo of user nets the contract tests run every energy method on: name -> train.py overrides.

Each entry plugs a plain user class in by `_target_` (tests/mypkg), as the README says a user
would; the narrow ResNet-18 is the template's own.
"""

from __future__ import annotations

SIGNAL = "data._target_=mypkg.SignalDataModule"
TOKENS = "data._target_=mypkg.TokenDataModule"

ZOO: dict[str, list[str]] = {
    "mlp": [SIGNAL, "model.net._target_=mypkg.UserMLP"],
    "cnn2d": ["data=digits", "model.net._target_=mypkg.SmallCNN"],
    "cnn1d": [SIGNAL, "model.net._target_=mypkg.SignalCNN"],
    "gru": [SIGNAL, "model.net._target_=mypkg.GRUNet"],
    "transformer": [TOKENS, "model.net._target_=mypkg.TokenTransformer"],
    "resnet18": ["data=digits", "model=resnet18", "model.net.width=8"],
    # the user's own LightningModule: regression (MSE, val/loss and val/mae, no accuracy), dict
    # batches, its own plateau scheduler; the run monitors val/loss (monitor=auto)
    "forecast": [
        "data._target_=mypkg.ForecastDataModule",
        "model._target_=mypkg.UserForecaster",
        "model.net._target_=mypkg.SignalCNN",
    ],
    # nets torch-pruning cannot prune right: prune checks, rolls back and steps aside on them
    "lstm2": [SIGNAL, "model.net._target_=mypkg.LSTMNet", "+model.net.num_layers=2"],
    "patch_transformer": [SIGNAL, "model.net._target_=mypkg.PatchTransformer"],
}

# Nets torch-pruning cannot handle (tests/test_prune_any_net.py): prune is rolled back and steps
# aside on them (lstm2 and patch_transformer are in ZOO too).
PRUNE_ASIDE: dict[str, list[str]] = {
    "lstm1": [SIGNAL, "model.net._target_=mypkg.LSTMNet"],
    "lstm2": [SIGNAL, "model.net._target_=mypkg.LSTMNet", "+model.net.num_layers=2"],
    "patch_transformer": [SIGNAL, "model.net._target_=mypkg.PatchTransformer"],
}
