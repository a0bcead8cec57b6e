"""Train the example model: an iris logistic regression saved in MLflow format.

Used by the quick start (``scripts/quickstart.sh``) and by the tests' ``example_model``
fixtures. mlflow and scikit-learn are example/test dependencies, never runtime ones.

    python examples/train_model.py OUTPUT_DIR [--version N] [--broken]

``--version N`` trains with a regularisation strength derived from N, so versions differ
in their weights (and therefore their digest) and in some predictions, including on the
saved input example.

``--broken`` saves a model that validates (``MLmodel`` with a ``python_function`` flavor,
the same requirements as a good model, input examples) but whose loader raises at once
when a server loads it: deterministic, no network, no timeout involved.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

# Rows 0, 50 and 100 are one of each class; 119 and 50 are predicted differently by
# version 1 and version 2, so a redeploy is visible in the answers.
EXAMPLE_ROWS = [0, 50, 100, 119]

BROKEN_LOADER_SOURCE = '''\
"""Loader of the deliberately broken example model: loading always fails."""


def _load_pyfunc(data_path):
    raise RuntimeError(
        "example model built with --broken: this loader always fails (by design)"
    )
'''


def regularisation(version: int) -> float:
    """Inverse regularisation strength C for a model version (1 -> 1.0, 2 -> 0.05, ...)."""
    if version < 1:
        raise ValueError(f"--version must be >= 1, got {version}")
    return 1.0 / 20 ** (version - 1)


def pinned_requirements() -> list[str]:
    """The model's pip requirements, pinned to the versions installed here.

    Written explicitly rather than inferred: mlflow's inference imports the model in a
    subprocess and records whatever happens to get imported there (pytest, psutil, rich
    under a test run), so the list, and the environment hash, would vary between runs.
    """
    from importlib.metadata import version

    # skops: mlflow 3 saves scikit-learn models as model.skops by default.
    names = ["mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas"]
    return [f"{name}=={version(name)}" for name in names]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path, help="directory to write (must not exist)")
    parser.add_argument("--version", type=int, default=1, help="model version (default 1)")
    parser.add_argument(
        "--broken", action="store_true", help="save a model whose loader fails at serve time"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace OUTPUT_DIR if it already exists"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.output_dir.resolve()
    if out.exists():
        if not args.force:
            print(f"error: {out} already exists (use --force to replace it)", file=sys.stderr)
            return 2
        shutil.rmtree(out)

    # Imported here so `--help` is instant.
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(C=regularisation(args.version), max_iter=1000)
    model.fit(features, target)
    example = features.iloc[EXAMPLE_ROWS].reset_index(drop=True)
    signature = infer_signature(features, model.predict(features))
    requirements = pinned_requirements()

    if not args.broken:
        mlflow.sklearn.save_model(
            model,
            str(out),
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
            metadata={"orchestrate_example_version": args.version},
        )
        print(f"saved iris model version {args.version} to {out}")
        return 0

    # The broken model declares exactly the requirements of a good one, so the orchestrator
    # installs (and can reuse) the same environment and fails only when loading.
    with tempfile.TemporaryDirectory() as tmp:
        loader = Path(tmp) / "broken_loader.py"
        loader.write_text(BROKEN_LOADER_SOURCE)
        mlflow.pyfunc.save_model(
            str(out),
            loader_module="broken_loader",
            code_paths=[str(loader)],
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
            metadata={"orchestrate_example_version": args.version, "broken": True},
        )
    print(f"saved BROKEN iris model version {args.version} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
