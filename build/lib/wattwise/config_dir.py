"""Where the Hydra configs live: inside the package, so a non-editable install finds them.

`conf/` at the repository root is a link to this folder, for people browsing the repo.
"""

from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent / "conf"
