"""The `orchestrate` console script the tests run (one place for every test package)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def orchestrate_executable() -> str:
    """The console script installed next to this interpreter (else the one on PATH)."""
    beside = Path(sys.executable).parent / "orchestrate"
    if beside.is_file():
        return str(beside)
    found = shutil.which("orchestrate")
    if found is None:
        pytest.fail("the `orchestrate` console script is not installed (pip install -e '.[test]')")
    return found
