"""Adding a method touches its folder and its config, nothing else (docs/adding_a_method.md).

A throwaway method is written into a copy of the repository - `src/wattwise/methods/throwaway/`
(callback, card) and `src/wattwise/conf/optim/throwaway.yaml`, and no other file - and the copy's
own registry, `green`, sweep list, layout rules and contract matrix pick it up (green itself
is run by the contract matrix for every member; here its membership is checked).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

CALLBACK = '''"""A throwaway method: counts the training steps it saw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wattwise.methods.base import STATUS_ACTIVE, EnergyMethod
from wattwise.methods.shared.settings import MethodSettings, integer, setting


@dataclass(frozen=True)
class ThrowawaySettings(MethodSettings):
    every: int = setting(1, integer(low=1))


class Throwaway(EnergyMethod):
    name = "throwaway"
    figure_prefix = "throwaway/"
    summary_keys = ("throwaway/steps",)
    recipes = {"green": {}}

    def __init__(self, every: int = 1, if_not_applicable: str = "fail") -> None:
        super().__init__(if_not_applicable)
        self.settings = ThrowawaySettings.build(self.config_key, every=every)
        self.steps = 0

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.status = STATUS_ACTIVE

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
        self.steps += 1

    def method_figures(self) -> dict[str, Any]:
        return {"throwaway/steps": self.steps}

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
'''

CONFIG = """# @package _global_
# A throwaway method (tests/test_new_method.py).
callbacks:
  throwaway:
    _target_: wattwise.methods.throwaway.callback.Throwaway
    every: 1
    if_not_applicable: fail
"""

CHECK = """
from wattwise.methods import registry
assert "throwaway" in registry.method_names(), registry.method_names()
assert "throwaway" in registry.recipe_members("green"), registry.recipe_members("green")
assert "[throwaway]" in registry.sweep_choices()
print("registered")
"""


@pytest.mark.slow
def test_a_new_method_needs_only_its_folder_and_config(tmp_path: Path):
    copy = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    for rel in files.stdout.splitlines():
        src = ROOT / rel
        if src.is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / rel)
    folder = copy / "src/wattwise/methods/throwaway"
    folder.mkdir()
    (folder / "__init__.py").write_text('"""throwaway"""\n')
    (folder / "callback.py").write_text(CALLBACK)
    (folder / "README.md").write_text("# throwaway\n\nCounts steps. Saves nothing.\n")
    (copy / "src/wattwise/conf/optim/throwaway.yaml").write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}

    out = subprocess.run([sys.executable, "-c", CHECK], cwd=copy, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "registered" in out.stdout, out.stderr[-2000:]

    tests = [
        "tests/test_layout.py",
        "tests/test_contract.py::test_every_option_on_every_net_trains_reports_and_resumes[throwaway-mlp]",
        "tests/test_contract.py::test_a_bad_setting_fails_in_one_line_naming_the_key[throwaway]",
        "tests/test_contract.py::test_registry_names_files_classes_and_state_keys_agree",
    ]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *tests]
    out = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:]
    assert f"{len(tests) - 1}" in out.stdout and " passed" in out.stdout and "deselected" not in out.stdout
