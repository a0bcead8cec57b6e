"""Benchmark: deploying the example model on the `local` target, cold and warm.

Cold: a fresh ORCHESTRATE_ENVS_DIR, so `build` makes a new virtualenv (with uv when installed;
uv's own package cache is left as it is, and reported). Warm: the virtualenv is reused, by a
redeploy of the same endpoint (new model version: zero-downtime swap, old server drained in
`cleanup`) and by a deploy of a second endpoint. Each figure is the wall time of the real
`orchestrate deploy` subprocess; per-stage times come from `orchestrate status ID --json`
(attempts[].outputs.duration_s). Every endpoint is deleted at the end.

    python benchmarks/core_deploy.py [--quick] [--runs N]

Target (issue 2): warm deploy under 5 s. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import REPO, bench_env, median, print_table, run_cli

STAGES = ["validate", "build", "push", "create_endpoint", "health_check", "shift_traffic", "cleanup"]


def deploy(env: dict[str, str], model: Path, name: str) -> dict[str, Any]:
    took, result = run_cli(["deploy", str(model), "--target", "local", "--name", name], env)
    found = re.search(r"deployment (\d+) succeeded", result.stdout)
    if not found:
        raise SystemExit(f"cannot find the deployment id in:\n{result.stdout}\n{result.stderr}")
    _, status = run_cli(["status", found.group(1), "--json"], env)
    record = json.loads(status.stdout)
    stages = {}
    for attempt in record["attempts"]:
        if attempt["status"] == "succeeded":
            stages[attempt["stage"]] = attempt["outputs"].get("duration_s")
        elif attempt["status"] == "skipped":
            stages.setdefault(attempt["stage"], None)
    build = next((a["outputs"] for a in record["attempts"] if a["stage"] == "build"), {})
    return {"id": record["id"], "wall_s": took, "stages": stages, "env_reused": build.get("env_reused"),
            "installer": build.get("installer")}


def row(label: str, runs: list[dict[str, Any]]) -> list[str]:
    def fmt(values: list[float | None]) -> str:
        present = [v for v in values if v is not None]
        return f"{median(present):.2f}" if present else "skip"

    return ([label, str(len(runs)), f"{median([r['wall_s'] for r in runs]):.2f}"]
            + [fmt([r["stages"].get(s) for r in runs]) for s in STAGES]
            + [f"{median([r['wall_s'] - sum(v or 0 for v in r['stages'].values()) for r in runs]):.2f}",
               str(runs[0]["installer"]) + (" (reused)" if runs[0]["env_reused"] else " (built)")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 warm runs of each kind instead of 5")
    parser.add_argument("--runs", type=int, default=None, help="warm runs of each kind (default 5)")
    args = parser.parse_args()
    runs = args.runs or (2 if args.quick else 5)

    with tempfile.TemporaryDirectory(prefix="orchestrate-bench-deploy-") as tmp:
        tmpdir = Path(tmp)
        models = [tmpdir / "model-v1", tmpdir / "model-v2"]
        for version, path in enumerate(models, start=1):
            subprocess.run([sys.executable, str(REPO / "examples" / "train_model.py"), str(path),
                            "--version", str(version)], check=True, capture_output=True)
        env = bench_env(tmpdir / "home")
        env["ORCHESTRATE_ENVS_DIR"] = str(tmpdir / "envs")  # fresh: the first deploy builds
        uv = shutil.which("uv")
        uv_cache = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True).stdout.strip() if uv else ""
        names: list[str] = []
        results: dict[str, list[dict[str, Any]]] = {}
        try:
            names.append("bench-a")
            results["cold: first deploy, new virtualenv"] = [deploy(env, models[0], "bench-a")]
            redeploys = []
            for i in range(runs):
                redeploys.append(deploy(env, models[(i + 1) % 2], "bench-a"))
            results["warm: redeploy of bench-a (new version, swap + drain)"] = redeploys
            seconds = []
            for i in range(runs):
                name = f"bench-b{i}"
                names.append(name)
                seconds.append(deploy(env, models[0], name))
            results["warm: new endpoint, virtualenv reused"] = seconds
        finally:
            for name in names:
                run_cli(["delete", name, "--yes"], env, check=False)
        print_table(
            "Local deploy of the example model (seconds; `orchestrate deploy` wall time, stage medians from "
            "status --json)",
            ["case", "n", "wall", *STAGES, "outside stages", "environment"],
            [row(label, r) for label, r in results.items()],
        )
        print(f"uv: {uv or 'not installed'}; uv cache {uv_cache or '-'} (left warm: 'cold' means a new "
              f"virtualenv, not an empty package cache)")


if __name__ == "__main__":
    main()
