"""API keys never reach a file a run writes, a logger or a log line.

A real tiny run from the command line, with the Electricity Maps key given as an override (and a
second one in ELECTRICITYMAPS_API_KEY) and a W&B key in WANDB_API_KEY, logging to CSV and offline
W&B: no file of the run dir (`.hydra/*.yaml`, summary.json, the model card, the loggers' files, the
log) and neither stdout nor stderr holds any key, while the provider still received the key.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from cli_fork import run_forked
from conftest import SMALL
from fake_intensity_provider import Script, fake_provider
from omegaconf import OmegaConf

from wattwise.utils.secrets import REDACTED, hide_secret_overrides, redact, redact_overrides


def test_secret_overrides_are_hidden_and_redacted(monkeypatch):
    monkeypatch.setenv("WATTWISE_SECRET_OVERRIDES", "{}")  # restored (unset) after the test
    args = ["model=mlp", "energy.provider.api_key=k1", "+logger.x.api_key=k2", "seed=1"]
    assert hide_secret_overrides(args) == ["model=mlp", "seed=1"]
    assert redact_overrides(args)[1:3] == [
        f"energy.provider.api_key={REDACTED}",
        f"+logger.x.api_key={REDACTED}",
    ]
    cfg = {"energy": {"provider": {"api_key": "k1", "endpoint": None}}, "tokens": 3, "db_password": "p"}
    assert redact(OmegaConf.create(cfg)) == {
        "energy": {"provider": {"api_key": REDACTED, "endpoint": None}},
        "tokens": 3,
        "db_password": REDACTED,
    }


def _energy_file_with_key(tmp_path: Path, key: str) -> Path:
    """A config group file of the user's own (on hydra.searchpath) that sets the provider's key."""
    folder = tmp_path / "my_conf" / "energy"
    folder.mkdir(parents=True)
    (folder / "with_key.yaml").write_text(f"defaults:\n  - auto\nprovider:\n  api_key: {key}\n")
    return tmp_path / "my_conf"


def test_no_key_reaches_any_file_of_the_run_or_its_output(tmp_path):
    """Keys by override (run a) and by the user's config file (run b), with W&B and env keys set."""
    keys = {name: f"{name}-{uuid.uuid4().hex}" for name in ("override", "env", "wandb", "file")}
    conf = _energy_file_with_key(tmp_path, keys["file"])
    script = Script(latest=200.0)
    with fake_provider(script) as url:
        by = {
            "a": [f"energy.provider.api_key={keys['override']}"],
            "b": [f"hydra.searchpath=[file://{conf}]", "energy=with_key"],
        }
        cases = [
            {
                "args": [
                    "data=digits",
                    "model=mlp",
                    *SMALL,
                    "logger=many",
                    *extra,
                    "energy.region=DE",
                    f"energy.provider.endpoint={url}",
                    f"hydra.run.dir={tmp_path / run}",
                ],
                "cwd": str(tmp_path),
                "env": {
                    "ELECTRICITYMAPS_API_KEY": keys["env"],
                    "WANDB_API_KEY": keys["wandb"],
                    "WANDB_MODE": "offline",
                },
                "timeout": 120,
                "out": str(tmp_path / "logs" / run),
            }
            for run, extra in by.items()
        ]
        results = run_forked(cases, tmp_path / "fork")
    for result in results:
        assert result["rc"] == 0, result["stderr"][-3000:]
    sent = sorted({r["token"] for r in script.requests})
    assert sent == sorted([keys["override"], keys["file"]])  # each run's key still reached the provider
    for run, result in zip(by, results, strict=True):
        files = [p for p in (tmp_path / run).rglob("*") if p.is_file()]
        names = {p.relative_to(tmp_path / run).as_posix() for p in files}
        assert {".hydra/config.yaml", ".hydra/overrides.yaml", "summary.json", "model_card.md"} <= names
        assert any(n.startswith("wandb/") for n in names) and "csv/hparams.yaml" in names
        for key in keys.values():
            assert key not in result["stdout"] + result["stderr"]
            for p in files:
                assert key.encode() not in p.read_bytes(), (key, p)
