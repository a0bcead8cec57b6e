"""`orchestrate build` vs `mlflow models build-docker`, same model, same engine, same base image.

    python benchmarks/images_vs_mlflow.py [--registry 127.0.0.1:15000] [--skip-mlflow]

Needs the Docker engine, the base image python:3.11-slim and the plain registry that
scripts/test.sh starts. Prints, for each tool: cold build, warm rebuild (same inputs),
model-only rebuild (a new model version, same requirements), push of that model-only change
(bytes and seconds), image size and the size added on top of the base, and `docker run` to
the first `/ping`. Figures are printed, not asserted.

Cold means cold: the requirements image of this model is removed first and the build runs
with --no-cache (the wheel downloads still come from the host's pip cache, as they would on
a developer machine). MLflow's generated Dockerfile is built as MLflow writes it except for
what this machine needs: its FROM points at the local base image, which has no `pip` or
`python` command, so a venv provides them; the host's pip.conf and CA bundle are copied in
(they are how this machine reaches PyPI), and the build runs with the host network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import REPO, print_table

BASE = "python:3.11-slim"


def sh(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                            check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                         f"{result.stderr[-3000:]}")
    return result


def timed(*args: str, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = sh(*args, env=env)
    return time.perf_counter() - started, result


def image_size(client: Any, reference: str) -> int:
    return int(client.images.get(reference).attrs["Size"])


def start_to_ping(client: Any, reference: str, runs: int = 3) -> float:
    samples = []
    for _ in range(runs):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        started = time.perf_counter()
        container = client.containers.run(reference, detach=True, ports={"8080/tcp": ("127.0.0.1", port)})
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                if time.perf_counter() - started > 300:
                    raise SystemExit(f"{reference} did not answer /ping within 300 s")
                time.sleep(0.05)
            samples.append(time.perf_counter() - started)
        finally:
            container.remove(force=True)
    return statistics.median(samples)


def new_layer_bytes(client: Any, old: str, new: str) -> tuple[int, int]:
    """(bytes, count) of the layers `new` has and `old` lacks: what a push of `new` sends."""
    before = set(client.images.get(old).attrs["RootFS"]["Layers"])
    layers = client.images.get(new).attrs["RootFS"]["Layers"]
    # History entries that made a layer (not #(nop) metadata), oldest first, pair with RootFS.
    made = [h for h in reversed(client.api.history(new)) if "#(nop)" not in h["CreatedBy"] or h["Size"]]
    sizes = [int(h["Size"]) for h in made][-len(layers):]
    fresh = [(layer, size) for layer, size in zip(layers, sizes) if layer not in before]
    return sum(size for _layer, size in fresh), len(fresh)


def train(out: Path, *args: str) -> Path:
    sh(sys.executable, str(REPO / "examples" / "train_model.py"), str(out), *args)
    return out


def bench_orchestrate(client: Any, v1: Path, v2: Path, registry: str, home: Path) -> dict[str, Any]:
    from orchestrator import images
    from orchestrator.model import mlmodel

    env = {**os.environ, "ORCHESTRATE_HOME": str(home)}
    repository = f"{registry}/bench/iris-orchestrate"
    # Cold: no requirements image, no builder cache.
    info = mlmodel.read_model(str(v1))
    spec = images.ImageSpec(info.path, info.digest, tuple(images.image_requirements(info.requirements, None)),
                            BASE, info.loader_module)
    base_id, platform = images.probe_base(client, BASE, home / "cache" / "platforms", lambda _m: None)
    _tag, requirements_hash, _labels = images.plan_tag(spec, base_id, platform)
    for image in client.images.list(filters={"label": f"io.orchestrate.requirements-hash={requirements_hash}"}):
        for tag in image.tags:
            client.images.remove(tag, force=True)
    cold, result = timed("orchestrate", "build", str(v1), "-t", repository, "--no-cache", "--json", env=env)
    built = json.loads(result.stdout)
    warm, again = timed("orchestrate", "build", str(v1), "-t", repository, "--json", env=env)
    assert json.loads(again.stdout)["skipped"]
    sh("orchestrate", "build", str(v1), "-t", repository, "--push", "--json", env=env)  # v1 in the registry
    model_only, result2 = timed("orchestrate", "build", str(v2), "-t", repository, "--json", env=env)
    built2 = json.loads(result2.stdout)
    push_s, pushed = timed("orchestrate", "build", str(v2), "-t", repository, "--push", "--json", env=env)
    pushed_info = json.loads(pushed.stdout)["pushed"][0]
    size = image_size(client, built["image"])
    return {
        "cold": cold, "warm": warm, "model_only": model_only, "push_s": pushed_info["seconds"],
        "rebuild_push": model_only + push_s, "push_bytes": pushed_info["bytes"], "size": size,
        "added": size - image_size(client, BASE), "ping": start_to_ping(client, built2["image"]),
    }


def bench_mlflow(client: Any, v1: Path, v2: Path, registry: str, work: Path) -> dict[str, Any]:
    repository = f"{registry}/bench/iris-mlflow"

    def build(model: Path, tag: str, *, no_cache: bool) -> float:
        context = work / f"mlflow-{tag}"
        shutil.rmtree(context, ignore_errors=True)
        started = time.perf_counter()
        sh("mlflow", "models", "generate-dockerfile", "-m", str(model), "-d", str(context))
        dockerfile = context / "Dockerfile"
        lines = dockerfile.read_text().splitlines()
        shims = [f"FROM {BASE}", "COPY pip.conf /etc/pip.conf", "COPY ca.crt /etc/ssl/certs/ca-certificates.crt",
                 "RUN python3 -m venv /opt/venv", "ENV PATH=/opt/venv/bin:$PATH"]
        lines = [line for line in lines if not line.startswith("FROM ")]
        dockerfile.write_text("\n".join(shims + lines) + "\n")
        shutil.copyfile("/etc/pip.conf" if Path("/etc/pip.conf").exists() else os.devnull, context / "pip.conf")
        shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", context / "ca.crt")
        sh("docker", "build", "--network", "host", *(["--no-cache"] if no_cache else []), "-t",
           f"{repository}:{tag}", str(context))
        return time.perf_counter() - started

    cold = build(v1, "v1", no_cache=True)
    warm = build(v1, "v1", no_cache=False)
    sh("docker", "push", f"{repository}:v1")
    model_only = build(v2, "v2", no_cache=False)
    push_s, _ = timed("docker", "push", f"{repository}:v2")
    new_bytes, new_layers = new_layer_bytes(client, f"{repository}:v1", f"{repository}:v2")
    size = image_size(client, f"{repository}:v1")
    return {
        "cold": cold, "warm": warm, "model_only": model_only, "push_s": push_s, "rebuild_push": model_only + push_s,
        "push_bytes": new_bytes, "push_layers": new_layers, "size": size,
        "added": size - image_size(client, BASE), "ping": start_to_ping(client, f"{repository}:v1"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=os.environ.get("TEST_REGISTRY", "127.0.0.1:15000"))
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    import docker

    client = docker.from_env(timeout=1800)
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        work = Path(tmp)
        v1, v2 = train(work / "v1"), train(work / "v2", "--version", "2")
        results = {"orchestrate build": bench_orchestrate(client, v1, v2, args.registry, work / "home")}
        if not args.skip_mlflow:
            results["mlflow build-docker"] = bench_mlflow(client, v1, v2, args.registry, work)
    rows = []
    for name, r in results.items():
        push_bytes = f"{r['push_bytes'] / 1e6:.2f} MB" + (f", {r['push_layers']} layers" if "push_layers" in r else "")
        rows.append([name, f"{r['cold']:.1f}", f"{r['warm']:.1f}", f"{r['model_only']:.1f}",
                     f"{r['push_s']:.1f} ({push_bytes})", f"{r['rebuild_push']:.1f}", f"{r['size'] / 1e6:.0f}",
                     f"{r['added'] / 1e6:.0f}", f"{r['ping']:.1f}"])
    print_table(
        "Images: iris model, base python:3.11-slim (local debootstrap image), one Docker engine",
        ["tool", "cold build s", "warm rebuild s", "model-only rebuild s", "push model-only change s",
         "rebuild + push s", "image MB", "added to base MB", "run to /ping s"],
        rows,
    )


if __name__ == "__main__":
    main()
