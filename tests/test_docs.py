"""The README's method table and bench/RESULTS.md's headline figures say the same thing."""

from __future__ import annotations

import re

from conftest import ROOT

from wattwise.methods import registry


def _readme_rows() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"\| `([a-z_]+)` \| .*? \| (.*?) \| .*? \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _headline() -> dict[str, str]:
    text = (ROOT / "bench" / "RESULTS.md").read_text()
    section = text.split("## Headline figures", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^- `([a-z_]+)`: (.+)$", section, re.M))


def test_every_readme_figure_is_the_headline_figure_in_results():
    rows, headline = _readme_rows(), _headline()
    assert len(rows) >= 5, rows
    for option, figure in rows.items():
        assert option in registry.option_names(), f"README lists `{option}`, which is not registered"
        said = headline.get(option)
        assert said == figure, f"`{option}`: README says {figure!r}, bench/RESULTS.md {said!r}"
