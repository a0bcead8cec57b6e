"""One ready-made layer on a base image, loaded into the engine without a build.

`COPY` of a directory costs the classic builder three writes of it: extracting the build
context, copying into the container, and re-applying the committed diff as the new layer.
For the few hundred MB of a model's requirements that is most of a cold build. Instead the
directory is written once as an uncompressed layer tar, and `docker load` gets an archive with
that layer and an image config of base + layer; the engine already has the base's layers
(it skips any layer whose chain it has), so it applies only the new one. Tools such as ko and
jib assemble images the same way.

The archive is the `docker save` format: `manifest.json`, the config and the layer tar.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Any, BinaryIO

from ..errors import PermanentTargetError
from .docker_engine import translated

_CHUNK = 1 << 20


def base_config(client: Any, image_id: str, cache_dir: Path) -> dict[str, Any]:
    """The base image's own config document (history included), fetched once per image id.

    The engine's inspect output is not that document, so it is read from `docker save`'s
    archive, which lists it in manifest.json."""
    cached = cache_dir / f"{image_id.replace(':', '-')}.config.json"
    if cached.is_file():
        document: dict[str, Any] = json.loads(cached.read_text())
        return document
    with translated(f"reading the config of base image {image_id}"), tempfile.TemporaryFile() as archive:
        for chunk in client.api.get_image(image_id, chunk_size=_CHUNK):
            archive.write(chunk)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            manifest = json.load(_member(tar, "manifest.json"))
            config: dict[str, Any] = json.load(_member(tar, manifest[0]["Config"]))
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(config))
    return config


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    handle = tar.extractfile(name)
    if handle is None:
        raise PermanentTargetError(f"the engine's archive of the base image has no {name}")
    return handle


class _Hashing(io.RawIOBase):
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, target: BinaryIO) -> None:
        self.target, self.sha256, self.size = target, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.target.write(data)


def _owned_by_root(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    # Readable by the image's non-root user whatever the host's umask or uv's cache modes were.
    executable = member.isdir() or member.mode & 0o111
    member.mode |= 0o555 if executable else 0o444
    return member


def write_layer(directory: Path, at: str, layer: BinaryIO) -> str:
    """`directory` as an uncompressed layer tar placed at `at` (absolute path in the image),
    parent directories included, owned by root; returns its diff id (sha256 of the tar)."""
    hashing = _Hashing(layer)
    with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        parts = Path(at.strip("/")).parts
        for depth in range(1, len(parts)):
            parent = tarfile.TarInfo("/".join(parts[:depth]))
            parent.type, parent.mode, parent.mtime = tarfile.DIRTYPE, 0o755, int(directory.stat().st_mtime)
            tar.addfile(_owned_by_root(parent))
        tar.add(directory, arcname="/".join(parts), filter=_owned_by_root)
    return f"sha256:{hashing.sha256.hexdigest()}"


def load_directory(
    client: Any, base_id: str, directory: Path, *, at: str, reference: str, created_by: str, cache_dir: Path
) -> None:
    """Load an image `reference` = base image + one layer holding `directory` at `at`."""
    base = base_config(client, base_id, cache_dir)
    with tempfile.TemporaryFile() as layer:
        diff_id = write_layer(directory, at, layer)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        config = {
            **base,
            "created": now,
            "rootfs": {"type": "layers", "diff_ids": [*base["rootfs"]["diff_ids"], diff_id]},
            "history": [*base.get("history", []), {"created": now, "created_by": created_by}],
        }
        config.pop("container", None)
        config.pop("container_config", None)
        # Names of the base's layer files do not matter: the engine has those layers and skips them.
        layer_names = [f"base-{index}/layer.tar" for index in range(len(base["rootfs"]["diff_ids"]))]
        manifest = [{"Config": "config.json", "RepoTags": [reference], "Layers": [*layer_names, "new/layer.tar"]}]
        layer_size = layer.tell()
        layer.seek(0)
        archive = _archive(
            {"config.json": json.dumps(config).encode(), "manifest.json": json.dumps(manifest).encode()},
            "new/layer.tar",
            layer,
            layer_size,
        )
        with translated(f"loading the requirements layer of {reference}"):
            answers = list(client.api.load_image(archive))
    errors = [str(answer["error"]) for answer in answers if isinstance(answer, dict) and answer.get("error")]
    if errors:
        raise PermanentTargetError(f"the Docker engine refused the requirements layer of {reference}: {errors[0]}")


def _archive(small: dict[str, bytes], big_name: str, big: BinaryIO, big_size: int) -> Any:
    """A tar stream of the small files and one big file, read from `big` in chunks."""
    for name, data in small.items():
        yield _header(name, len(data)) + data + _padding(len(data))
    yield _header(big_name, big_size)
    while chunk := big.read(_CHUNK):
        yield chunk
    yield _padding(big_size) + b"\0" * (2 * tarfile.BLOCKSIZE)


def _header(name: str, size: int) -> bytes:
    member = tarfile.TarInfo(name)
    member.size, member.mode = size, 0o644
    return member.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)
