"""A model-card snippet with the Hugging Face `co2_eq_emissions` metadata filled in from the run.

The YAML block is what the Hub reads from a model card's front matter (emissions in grams CO2e,
source, training_type, geographical_location, hardware_used); the table under it says how the
figure was made, so a reader can tell a measurement from an estimate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MODEL_CARD_FILE = "model_card.md"


def _yaml_str(text: Any) -> str:
    return json.dumps(str(text))  # a JSON string is a valid YAML scalar, quotes and colons included


def co2_card(
    emissions_g: float,
    source: str,
    training_type: str,
    location: str,
    hardware: str,
    measured: bool,
    details: Mapping[str, str] | None = None,
) -> str:
    """The markdown snippet: front matter, then a short table of how the figure was made."""
    lines = [
        "---",
        "co2_eq_emissions:",
        f"  emissions: {emissions_g:.6g}",
        f"  source: {_yaml_str(source)}",
        f"  training_type: {_yaml_str(training_type)}",
        f"  geographical_location: {_yaml_str(location)}",
        f"  hardware_used: {_yaml_str(hardware)}",
        "---",
        "",
        "## Environmental impact",
        "",
        f"Training emitted about **{emissions_g:.4g} g CO2e**, "
        + (
            "from energy measured by wattwise."
            if measured
            else "from an energy ESTIMATE by wattwise (no counter)."
        ),
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in (details or {}).items()]
    return "\n".join(lines) + "\n"
