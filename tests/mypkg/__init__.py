"""A user's own package, written without any wattwise code: datamodules and nets for the zoo.

The README's plug-in command runs these verbatim
(`python train.py data._target_=mypkg.MyDataModule model.net._target_=mypkg.MyNet`), and the
contract tests train every energy method on every net here. Constructors take only their own
arguments, with their own defaults, as a user's classes would.
"""

from mypkg.data import ForecastDataModule, MyDataModule, SignalDataModule, TokenDataModule
from mypkg.modules import TinyRegressor, UserClassifier, UserForecaster
from mypkg.nets import (
    GRUNet,
    LSTMNet,
    MyNet,
    PatchTransformer,
    SignalCNN,
    SmallCNN,
    TokenTransformer,
    UserMLP,
)

__all__ = [
    "ForecastDataModule",
    "UserForecaster",
    "GRUNet",
    "LSTMNet",
    "MyDataModule",
    "MyNet",
    "PatchTransformer",
    "SignalCNN",
    "SignalDataModule",
    "SmallCNN",
    "TokenDataModule",
    "TinyRegressor",
    "TokenTransformer",
    "UserClassifier",
    "UserMLP",
]
