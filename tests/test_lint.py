"""The repository passes ruff with the rules of ``pyproject.toml`` (``[tool.ruff]``: pycodestyle E, pyflakes F,
bugbear B, simplify SIM and McCabe complexity at most 12, lines of at most 120 characters), so a new finding fails
the suite with ruff's own report of file, line and rule."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing_in_the_repository() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                           str(REPO)], cwd=REPO, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"ruff check (rules in pyproject.toml [tool.ruff]):\n{done.stdout}{done.stderr}", pytrace=False)
