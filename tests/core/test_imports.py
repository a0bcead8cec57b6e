"""Start-up stays light, and each package's public surface is sorted and complete."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

HEAVY = ("boto3", "botocore", "azure", "docker", "kubernetes", "mlflow", "pandas", "numpy")


def test_help_loads_no_cloud_sdk() -> None:
    code = (
        "import sys, json\n"
        "from orchestrator.cli import cli\n"
        "try:\n    cli(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


@pytest.mark.parametrize("package", ["orchestrator", "targets", "scoring"])
def test_all_is_sorted_and_complete(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert exported == sorted(exported)
    public = {
        name for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", package).startswith(package)
        and not isinstance(value, type(sys))
    }
    public.discard("annotations")
    assert public <= set(exported) | {"TYPE_CHECKING", "Any", "Mapping"}, public - set(exported)
