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
}
