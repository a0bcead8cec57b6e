"""Benchmark: `orchestrate deploy --target sagemaker` on the AWS emulator in container mode.

For a first deployment and for a model-only update of the same endpoint (blue/green
all-at-once), the time from starting `orchestrate deploy` until the endpoint is InService and
the health check passed (the health_check attempt's end), the whole command's wall time, each
stage's duration, how long the scoring container took from `docker run` to its first /ping
(inside create_endpoint, measured by the emulator), and the share of the wall time spent in orchestrate itself: the CPU time of
the `orchestrate` process (user + system). The rest is waiting: on the Docker engine (image
build and push, the container starting and answering /ping) and on the emulated SageMaker.

The images are the real scoring images orchestrate builds (orchestrator.images). Each model
gets a nonce file, so each deployment builds and pushes its own model layer; the requirements
layer is reused when the engine already has it (say so in the output). ECR is a new
repository in the local registry per run. Real SageMaker adds minutes of instance
provisioning that the emulator does not: these figures are orchestrate's part, not AWS's.

    python benchmarks/sagemaker_deploy.py [--runs N]

Needs the Docker engine and TEST_REGISTRY (scripts/test.sh starts both). Prints figures,
asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import REPO, bench_env, median, print_table

sys.path.insert(0, str(REPO))

STAGES = ["validate", "build", "push", "create_endpoint", "health_check", "shift_traffic", "cleanup"]
ROLE = "arn:aws:iam::123456789012:role/orchestrate-bench"


def train(out: Path, *args: str) -> Path:
    subprocess.run([sys.executable, str(REPO / "examples" / "train_model.py"), str(out), *args], check=True,
                   capture_output=True)
    (out / "bench_nonce.txt").write_text(uuid.uuid4().hex)  # a new model digest: a new model layer
    return out


def deploy(env: dict[str, str], model: Path, name: str, *extra: str) -> dict[str, Any]:
    started_at = dt.datetime.now(dt.timezone.utc)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(["orchestrate", "deploy", str(model), "--name", name, "--target", "sagemaker",
                             "-C", f"role_arn={ROLE}", "-C", "poll_interval=0.1", "-C", "poll_max_interval=0.5",
                             "-C", "container_startup_timeout=300", *extra, "--json"],
                            check=False, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"deploy exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    record = json.loads(result.stdout)
    stages = {a["stage"]: a["outputs"].get("duration_s") for a in record["attempts"] if a["status"] == "succeeded"}
    healthy_at = max(dt.datetime.fromisoformat(a["finished_at"]) for a in record["attempts"]
                     if a["stage"] == "health_check" and a["status"] == "succeeded")
    if healthy_at.tzinfo is None:
        healthy_at = healthy_at.replace(tzinfo=dt.timezone.utc)
    build = next(a["outputs"] for a in record["attempts"] if a["stage"] == "build" and a["status"] == "succeeded")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "healthy_s": (healthy_at - started_at).total_seconds(), "cpu_s": cpu,
            "stages": stages, "requirements_reused": build.get("requirements_reused")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    registry = os.environ.get("TEST_REGISTRY")
    if not registry:
        raise SystemExit("TEST_REGISTRY is not set: run `bash scripts/test.sh` once, then export "
                         "TEST_REGISTRY=127.0.0.1:15000")
    import docker

    from tests.emulators.aws import AwsEmulator

    emulator = AwsEmulator(registry=registry, docker_client=docker.from_env()).start()
    emulator.container_mode = True
    results: dict[str, list[dict[str, Any]]] = {"first deployment": [], "model-only update": []}
    scratch = Path(tempfile.mkdtemp(prefix="orchestrate-bench-sm-"))
    try:
        for run in range(args.runs):
            emulator.reset()
            emulator.container_mode = True
            home = scratch / f"home{run}"
            env = bench_env(home)
            env.update({"AWS_ENDPOINT_URL": emulator.url, "AWS_ACCESS_KEY_ID": "bench",
                        "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
                        "AWS_EC2_METADATA_DISABLED": "true"})
            v1 = train(scratch / f"v1-{run}")
            v2 = train(scratch / f"v2-{run}", "--version", "2")
            repository = f"bench-{uuid.uuid4().hex[:8]}"
            results["first deployment"].append(deploy(env, v1, "bench", "-C", f"ecr_repository={repository}"))
            results["first deployment"][-1]["container_s"] = emulator.container_ready_s[-1]
            results["model-only update"].append(deploy(env, v2, "bench", "-C", f"ecr_repository={repository}",
                                                       "-C", "deployment.type=all_at_once",
                                                       "-C", "deployment.wait_s=0"))
            results["model-only update"][-1]["container_s"] = emulator.container_ready_s[-1]
            subprocess.run(["orchestrate", "delete", "bench", "--yes"], env=env, check=True, capture_output=True)
    finally:
        emulator.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    rows = []
    for label, runs in results.items():
        def m(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return median([r[key] for r in runs])

        stage = {s: median([r["stages"].get(s) or 0.0 for r in runs]) for s in STAGES}
        rows.append([label, len(runs), f"{m('healthy_s'):.2f}", f"{m('wall_s'):.2f}",
                     f"{stage['build']:.2f}", f"{stage['push']:.2f}", f"{stage['create_endpoint']:.2f}",
                     f"{m('container_s'):.2f}",
                     f"{stage['health_check']:.2f}", f"{m('cpu_s'):.2f}",
                     f"{100 * m('cpu_s') / m('wall_s'):.0f}%",
                     "yes" if all(r["requirements_reused"] for r in runs) else "no"])
    print_table("sagemaker target on the AWS emulator, container mode (seconds, medians)",
                ["deployment", "runs", "to InService + healthy", "deploy wall", "build", "push", "create_endpoint",
                 "of which container start to /ping",
                 "health_check", "orchestrate CPU", "orchestrate share", "requirements layer reused"], rows)


if __name__ == "__main__":
    main()
