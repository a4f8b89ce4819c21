"""Where netzoo finds its templates, shipped specs and recipes, in a checkout or an installed copy."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
SPECS_DIR = PACKAGE_DIR / "specs"      # shipped zoo specs: default.toml, square.toml, ...
RECIPES_DIR = PACKAGE_DIR / "recipes"  # shipped recipes and recipe grids


def templates_dir() -> Path:
    """The Jinja templates folder: the checkout's templates/, else the installed share/netzoo/templates."""
    for candidate in (REPO_DIR / "templates", Path(sys.prefix) / "share" / "netzoo" / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"netzoo's templates were not found in {REPO_DIR / 'templates'} nor "
        f"{Path(sys.prefix) / 'share/netzoo/templates'}; reinstall netzoo (pip install -e .)."
    )
