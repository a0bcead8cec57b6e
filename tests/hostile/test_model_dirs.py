"""Hostile and careless model directories (issue 11): links out of the model, special files,
loops, oversized or undecodable files, MLmodel paths that leave the directory, a full disk
while snapshotting, and snapshots or virtualenvs deleted under ORCHESTRATE_HOME.

Everything is real: symbolic links, FIFOs, a unix socket, /dev/zero, a 600 KiB tmpfs mounted
for the test, and the `orchestrate` CLI as a subprocess. Where bad input must be refused, the
state store is compared row by row before and after.

| finding | what was wrong on 1407a72 | tests |
|---|---|---|
| S1 | links were followed into the snapshot and the Docker context (`notes.txt -> /etc/shadow` became a world-readable file of the context) | test_link_out_of_the_model_is_refused (file-outside, absolute-outside, dir-outside, dev-zero, broken), test_generate_dockerfile_never_copies_a_file_from_outside, test_link_inside_the_model_is_copied_as_its_target |
| S2 | the digest left out linked directories (`extra -> /outside` got another model's digest) and files MLmodel names outside the directory (`model_path: ../../x.pkl` served) | test_link_out_of_the_model_is_refused (dir-outside), test_linked_directory_is_in_the_digest_and_the_snapshot, test_mlmodel_path_outside_the_model_is_refused |
| C2 | a link to /dev/zero or a FIFO hung `deploy`; `ln -s . loop` gave a shutil.Error traceback; deep or binary MLmodel, requirements.txt, python_env.yaml gave tracebacks | test_link_out_of_the_model_is_refused (dev-zero, fifo, socket, loop, loop-through-link), test_unreadable_model_file_is_refused |
| C6 | a full disk while snapshotting left `models/.<digest>.<pid>/`, blamed the database, and resume gave a traceback | test_full_disk_while_snapshotting_leaves_nothing, test_abandoned_staging_copy_is_removed |
| C7 | `rollback`/`resume` after `models/*` or `envs/*` was deleted: FileNotFoundError, deployment left `running` | test_rollback_rebuilds_a_deleted_snapshot_and_virtualenv, test_resume_rebuilds_a_deleted_snapshot |
| B-loader | `loader_module: ../../x` was accepted and failed only in a stage | test_mlmodel_path_outside_the_model_is_refused (loader-module) |
| K-size | a 60 MB MLmodel value was snapshotted | test_unreadable_model_file_is_refused (mlmodel-60mb) |
| (4) | snapshots were created 0755/0644 | test_snapshot_is_private_and_exactly_what_was_digested |
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from _executables import orchestrate_executable

from orchestrator.images import dockerfile
from orchestrator.model import mlmodel

# -- helpers ----------------------------------------------------------------------------------


def run(*args: str, home: Path, env: Mapping[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real CLI; a hang (a FIFO read, /dev/zero digested) fails the test by timeout."""
    return subprocess.run([orchestrate_executable(), *args], env={**os.environ, "ORCHESTRATE_HOME": str(home),
                                                                 **(env or {})},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str, code: int = 2) -> None:
    assert result.returncode == code, describe(result)
    assert result.stderr.startswith("Error: "), describe(result)
    assert "Traceback" not in result.stdout + result.stderr, describe(result)
    for fragment in fragments:
        assert fragment in result.stderr, describe(result)


def store_rows(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the home's SQLite store, to compare before and after."""
    with sqlite3.connect(home / "state.db") as connection:
        names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: sorted(connection.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr) for name in names}


def deployments(home: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(home / "state.db") as connection:
        return [(int(i), str(s)) for i, s in connection.execute("SELECT id, status FROM deployments ORDER BY id")]


@pytest.fixture(scope="module")
def seeded_home(example_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose store holds one succeeded noop deployment (made once for the module)."""
    home = tmp_path_factory.mktemp("seeded-home")
    result = run("deploy", str(example_model), "--name", "seed", "-t", "noop", home=home)
    assert result.returncode == 0, describe(result)
    return home


@pytest.fixture
def seeded(seeded_home: Path, orchestrate_home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """This test's home, a copy of the seeded one; the rows of its store."""
    shutil.copytree(seeded_home, orchestrate_home, dirs_exist_ok=True)
    return store_rows(orchestrate_home)


@pytest.fixture
def model(example_model: Path, tmp_path: Path) -> Path:
    """A copy of the example model to spoil; an `outside` directory lies beside it."""
    copy = tmp_path / "model"
    shutil.copytree(example_model, copy)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("root:$6$not-for-the-image\n")
    return copy


# -- S1, S2, C2: what a model directory may hold ----------------------------------------------


def _fifo(model: Path) -> Path:
    os.mkfifo(model / "pipe")
    return model / "pipe"


def _socket(model: Path) -> Path:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(model / "control.sock"))
    listener.close()  # the socket file stays
    return model / "control.sock"


def _link(name: str, target: str) -> Callable[[Path], Path]:
    def make(model: Path) -> Path:
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, model / name)
        return model / name

    return make


def _loop_through_link(model: Path) -> Path:
    (model / "data").mkdir()
    os.symlink("data", model / "alias")  # fine on its own: a link to a directory inside
    os.symlink("../alias", model / "data" / "back")  # alias/back -> alias: never ends
    return model / "alias" / "back"  # found first through the link (names are walked in order)


HOSTILE_ENTRIES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "file-outside": (_link("notes.txt", "../outside/secret.txt"), "outside the model directory"),
    "absolute-outside": (_link("shadow", "/etc/shadow"), "outside the model directory"),
    "dir-outside": (_link("extra", "../outside"), "outside the model directory"),
    "dev-zero": (_link("big.bin", "/dev/zero"), "outside the model directory"),
    "broken": (_link("gone.bin", "nothing-here"), "leads nowhere"),
    "fifo": (_fifo, "is a FIFO, not a regular file or directory"),
    "socket": (_socket, "is a socket, not a regular file or directory"),
    "loop": (_link("loop", "."), "which contains it"),
    "loop-through-link": (_loop_through_link, "which contains it"),
}


@pytest.mark.parametrize("kind", list(HOSTILE_ENTRIES))
def test_link_out_of_the_model_is_refused(seeded: Any, orchestrate_home: Path, model: Path, kind: str) -> None:
    make, fragment = HOSTILE_ENTRIES[kind]
    entry = make(model)
    # The model is read before any target does anything; the local target snapshots it too.
    for target in ("noop", "local") if kind in ("file-outside", "dev-zero") else ("noop",):
        result = run("deploy", str(model), "--name", "m", "-t", target, home=orchestrate_home, timeout=60)
        assert_refused(result, f"Error: {entry}", fragment)
    assert store_rows(orchestrate_home) == seeded
    assert not list((orchestrate_home / "models").glob(".*")) if (orchestrate_home / "models").exists() else True


def test_generate_dockerfile_never_copies_a_file_from_outside(orchestrate_home: Path, model: Path,
                                                             tmp_path: Path) -> None:
    os.symlink(tmp_path / "outside" / "secret.txt", model / "notes.txt")  # the S1 reproduction
    os.symlink(tmp_path / "outside", model / "extra")
    context = tmp_path / "ctx"
    result = run("generate-dockerfile", str(model), "-d", str(context), home=orchestrate_home, timeout=60)
    assert_refused(result, "outside the model directory")
    copied = [path for path in context.rglob("*")] if context.exists() else []
    assert not [path for path in copied if path.name in ("notes.txt", "secret.txt", "extra")], copied


def test_link_inside_the_model_is_copied_as_its_target(model: Path, tmp_path: Path) -> None:
    """A link to a file or directory inside the model is digested, snapshotted and put in the
    Docker context as a plain copy of what it names: no link ever leaves the model."""
    (model / "weights").mkdir()
    (model / "weights" / "w.bin").write_bytes(b"\x00\x01weights")
    os.symlink("weights/w.bin", model / "latest.bin")
    os.symlink("weights", model / "current")
    info = mlmodel.read_model(str(model))
    snapshot = mlmodel.snapshot(info, tmp_path / "models")
    context = tmp_path / "ctx"
    dockerfile.write_model_files(context, snapshot)
    for root in (snapshot, context / "model"):
        for relative in ("latest.bin", "current/w.bin", "weights/w.bin"):
            copied = root / relative
            assert copied.is_file() and not copied.is_symlink(), copied
            assert copied.read_bytes() == b"\x00\x01weights"
        assert not (root / "current").is_symlink()
        assert not [path for path in root.rglob("*") if path.is_symlink()]
    assert stat.S_IMODE((context / "model" / "current" / "w.bin").stat().st_mode) == 0o644
    assert mlmodel.digest(snapshot) == mlmodel.digest(context / "model") == info.digest


def test_linked_directory_is_in_the_digest_and_the_snapshot(model: Path, tmp_path: Path) -> None:
    """1407a72 digested a model with `extra -> data` like one without it, yet copied extra/."""
    (model / "data").mkdir()
    (model / "data" / "table.csv").write_text("a,b\n1,2\n")
    without_link = mlmodel.read_model(str(model)).digest
    os.symlink("data", model / "extra")
    info = mlmodel.read_model(str(model))
    assert info.digest != without_link
    snapshot = mlmodel.snapshot(info, tmp_path / "models")
    assert (snapshot / "extra" / "table.csv").read_text() == "a,b\n1,2\n"
    assert mlmodel.digest(snapshot) == info.digest  # the digest covers exactly what is snapshotted


def _set_in_mlmodel(section: str, key: str, value: Any) -> Callable[[Path], None]:
    def spoil(model: Path) -> None:
        import yaml

        document = yaml.safe_load((model / "MLmodel").read_text())
        node = document
        for part in section.split("."):
            node = node.setdefault(part, {})
        node[key] = value
        (model / "MLmodel").write_text(yaml.safe_dump(document))

    return spoil


MLMODEL_PATHS: dict[str, tuple[Callable[[Path], None], str]] = {
    "model-path-up": (_set_in_mlmodel("flavors.python_function", "model_path", "../../outside/model.pkl"),
                      "flavors.python_function.model_path is '../../outside/model.pkl'"),
    "model-path-absolute": (_set_in_mlmodel("flavors.python_function", "model_path", "/etc/passwd"),
                            "flavors.python_function.model_path is '/etc/passwd'"),
    "pickled-model-up": (_set_in_mlmodel("flavors.sklearn", "pickled_model", "sub/../../x.pkl"),
                         "flavors.sklearn.pickled_model"),
    "data-up": (_set_in_mlmodel("flavors.python_function", "data", "../outside"), "python_function.data"),
    "code-absolute": (_set_in_mlmodel("flavors.python_function", "code", "/tmp"), "python_function.code"),
    "env-up": (_set_in_mlmodel("flavors.python_function", "env", {"virtualenv": "../../python_env.yaml"}),
               "python_function.env.virtualenv"),
    "example-up": (_set_in_mlmodel("saved_input_example_info", "serving_input_path", "../../etc/hosts"),
                   "saved_input_example_info.serving_input_path"),
    "loader-module": (_set_in_mlmodel("flavors.python_function", "loader_module", "../../x"),
                      "loader_module '../../x' is not a Python module name"),
}


@pytest.mark.parametrize("kind", list(MLMODEL_PATHS))
def test_mlmodel_path_outside_the_model_is_refused(seeded: Any, orchestrate_home: Path, model: Path,
                                                   kind: str) -> None:
    spoil, fragment = MLMODEL_PATHS[kind]
    spoil(model)
    result = run("deploy", str(model), "--name", "m", "-t", "noop", home=orchestrate_home, timeout=60)
    assert_refused(result, f"Error: {model / 'MLmodel'}: ", fragment)
    assert store_rows(orchestrate_home) == seeded


def _deep_yaml(levels: int) -> str:
    return "python: " + "[" * levels + "]" * levels + "\n"


UNREADABLE_FILES: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "mlmodel-binary": ("MLmodel", lambda f: f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe"), "is not UTF-8 text"),
    "mlmodel-deep": ("MLmodel", lambda f: f.write_text("flavors: " + "[" * 100_000 + "]" * 100_000 + "\n"),
                     "nested too deeply"),
    "mlmodel-60mb": ("MLmodel", lambda f: f.write_text(f.read_text() + "notes: '" + "x" * (60 << 20) + "'\n"),
                     "is larger than 8 MiB"),
    "requirements-binary": ("requirements.txt", lambda f: f.write_bytes(b"numpy\n\xff\xfe\x00\x80scipy\n"),
                            "is not UTF-8 text"),
    "requirements-20mb": ("requirements.txt", lambda f: f.write_text("numpy\n" + "#" * (20 << 20) + "\n"),
                          "is larger than"),
    "python-env-deep": ("python_env.yaml", lambda f: f.write_text(_deep_yaml(100_000)), "nested too deeply"),
    "python-env-binary": ("python_env.yaml", lambda f: f.write_bytes(b"python: \xff\xfe3.11\n"), "is not UTF-8 text"),
    "example-not-json": ("serving_input_example.json", lambda f: f.write_text('{"inputs": [1, 2,'),
                         "is not a JSON input example"),
    "example-binary": ("serving_input_example.json", lambda f: f.write_bytes(b"\xff\xd8\xff\xe0JFIF"),
                       "is not UTF-8 text"),
    "example-32mb": ("serving_input_example.json", lambda f: f.write_text('{"inputs": [' + "1," * (16 << 20) + "1]}"),
                     "is larger than 16 MiB"),
}


@pytest.mark.parametrize("kind", list(UNREADABLE_FILES))
def test_unreadable_model_file_is_refused(seeded: Any, orchestrate_home: Path, model: Path, kind: str) -> None:
    name, spoil, fragment = UNREADABLE_FILES[kind]
    spoil(model / name)
    result = run("deploy", str(model), "--name", "m", "-t", "noop", home=orchestrate_home, timeout=120)
    assert_refused(result, f"Error: {model / name} ", fragment)
    assert store_rows(orchestrate_home) == seeded


# -- snapshots: private, exact, atomic ---------------------------------------------------------


def test_snapshot_is_private_and_exactly_what_was_digested(model: Path, tmp_path: Path) -> None:
    (model / "code").mkdir()
    (model / "code" / "helper.py").write_text("X = 1\n")
    (model / "code" / "run.sh").write_text("#!/bin/sh\n")
    (model / "code" / "run.sh").chmod(0o755)
    info = mlmodel.read_model(str(model))
    snapshot = mlmodel.snapshot(info, tmp_path / "models")
    assert stat.S_IMODE((tmp_path / "models").stat().st_mode) == 0o700
    modes = {path.relative_to(snapshot).as_posix(): stat.S_IMODE(path.stat().st_mode)
             for path in [snapshot, *snapshot.rglob("*")]}
    assert modes.pop(".") == 0o700 and modes.pop("code") == 0o700
    assert modes.pop("code/run.sh") == 0o700
    assert set(modes.values()) == {0o600}, modes
    assert mlmodel.digest(snapshot) == info.digest
    assert sorted([*modes, "code/run.sh"]) == sorted(
        path.relative_to(model).as_posix() for path in model.rglob("*") if path.is_file())


def test_abandoned_staging_copy_is_removed(model: Path, tmp_path: Path) -> None:
    """A process killed while copying leaves its staging directory; the next snapshot of that
    model removes it (its pid is dead), and keeps one of a process that still runs."""
    info = mlmodel.read_model(str(model))
    store = tmp_path / "models"
    store.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = store / f".{info.digest}.{dead.pid}"  # the name 1407a72 used
    abandoned_new = store / f".{info.digest}.{dead.pid}.k3j2"
    running = store / f".{info.digest}.{os.getppid()}.a1b2"
    for leftover in (abandoned, abandoned_new, running):
        leftover.mkdir()
        (leftover / "model.skops").write_bytes(b"partial")
    mlmodel.snapshot(info, store)
    assert not abandoned.exists() and not abandoned_new.exists()
    assert running.exists()
    assert sorted(path.name for path in store.iterdir()) == sorted([info.digest, running.name])


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 600 KiB tmpfs (the C6 reproduction), unmounted after the test."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k,mode=0700", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def test_full_disk_while_snapshotting_leaves_nothing(small_disk: Path, model: Path) -> None:
    (model / "weights.bin").write_bytes(os.urandom(700_000))  # more than the disk holds
    home = small_disk
    for attempt in range(2):  # a retry while still full is the same clean error, and leaves nothing either
        result = run("deploy", str(model), "--name", "big", "-t", "local", home=home, timeout=120)
        assert_refused(result, "is full", code=1)
        assert "state store" not in result.stderr and "database" not in result.stderr.lower(), describe(result)
        models = home / "models"
        assert not models.exists() or list(models.iterdir()) == [], list(models.iterdir())
        assert all(status == "failed" for _id, status in deployments(home)), deployments(home)
        assert shutil.disk_usage(home).free > 400_000  # no partial copy keeps the disk full
    for deployment_id, _status in deployments(home):  # a deployment recorded before its snapshot
        result = run("resume", str(deployment_id), home=home, timeout=120)
        assert_refused(result, "is full", code=1)
        assert deployments(home)[deployment_id - 1][1] == "failed"
    listed = run("list", home=home)
    assert listed.returncode == 0, describe(listed)  # the store is intact


# -- C7: rollback and resume after ORCHESTRATE_HOME/models or envs was emptied --------------------

V1_PREDICTIONS = [0, 1, 2, 2]


def _predict(home: Path, name: str, example_model: Path) -> Any:
    result = run("predict", name, "-i", str(example_model / "serving_input_example.json"), home=home)
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)


def _status(home: Path, deployment_id: int) -> dict[str, Any]:
    result = run("status", str(deployment_id), "--json", home=home)
    assert result.returncode == 0, describe(result)
    record: dict[str, Any] = json.loads(result.stdout)
    return record


def _build_env_path(record: dict[str, Any]) -> Path:
    for stage in record["attempts"]:
        outputs = stage.get("outputs") or {}
        if stage["stage"] == "build" and outputs.get("env_path"):
            return Path(outputs["env_path"])
    raise AssertionError(f"no build outputs in {record}")


@pytest.mark.slow
def test_rollback_rebuilds_a_deleted_snapshot_and_virtualenv(orchestrate_home: Path, example_model: Path,
                                                            example_model_v2: Path) -> None:
    home = orchestrate_home
    try:
        for version in (example_model, example_model_v2):
            result = run("deploy", str(version), "--name", "c7", home=home, timeout=600)
            assert result.returncode == 0, describe(result)
        env_path = _build_env_path(_status(home, 1))
        for snapshot in (home / "models").iterdir():
            shutil.rmtree(snapshot)
        shutil.rmtree(env_path)  # the virtualenv both deployments use (the live server keeps its open files)
        result = run("rollback", "c7", home=home, timeout=900)
        assert result.returncode == 0, describe(result)
        assert "Traceback" not in result.stderr
        record = _status(home, 3)
        assert record["status"] == "succeeded", record
        assert (env_path / "bin" / "python").exists()
        assert (home / "models" / record["model_digest"] / "MLmodel").is_file()
        assert _predict(home, "c7", example_model)["predictions"] == V1_PREDICTIONS
    finally:
        run("delete", "c7", "--yes", home=home, timeout=120)


@pytest.mark.slow
def test_resume_rebuilds_a_deleted_snapshot(orchestrate_home: Path, broken_model: Path) -> None:
    """A failed deployment resumed after its snapshot was deleted takes the model again from
    where it came from, instead of starting a server in a directory that is gone."""
    home = orchestrate_home
    try:
        result = run("deploy", str(broken_model), "--name", "c7r", "-C", "startup_timeout=60", home=home,
                     timeout=600)
        assert result.returncode == 1, describe(result)  # its loader raises: health_check fails
        for snapshot in (home / "models").iterdir():
            shutil.rmtree(snapshot)
        result = run("resume", "1", home=home, timeout=600)
        assert result.returncode == 1, describe(result)
        assert "Traceback" not in result.stderr and "FileNotFoundError" not in result.stderr, describe(result)
        assert "orchestrate resume 1" in result.stderr, describe(result)
        record = _status(home, 1)
        assert record["status"] == "failed", record
        validations = [stage for stage in record["attempts"] if stage["stage"] == "validate"]
        assert [stage["status"] for stage in validations] == ["succeeded", "succeeded"], validations
        assert (home / "models" / record["model_digest"] / "MLmodel").is_file()
    finally:
        run("delete", "c7r", "--yes", home=home, timeout=120)
