"""Reading files a user hands us: regular files only, size-bounded, UTF-8, and YAML whose
aliases cannot expand past a node budget.

`read_text` never waits on a FIFO, never reads a device such as /dev/zero, and reads at most
one byte past its limit; `load_yaml` also bounds nesting depth and the size of the document
as its aliases expand it (an anchor bomb is refused before anything is built from it).
Every refusal is a ConfigError naming the file and what to do."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .errors import ConfigError

MAX_BYTES = 1024 * 1024
# Nodes the document may hold once every alias is expanded, and how deep it may nest.
MAX_NODES = 10_000
MAX_DEPTH = 64

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def read_bytes(path: str | Path, *, what: str, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; ConfigError otherwise."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise ConfigError(
                f"{what} {path} is {kind}, not a regular file", hint="give the path of a file saved on disk"
            )
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise ConfigError(
            f"{what} {path} is larger than {max_bytes // 1024} KiB",
            hint=f"a {what} that large is not one orchestrate reads; check the path",
        )
    return data


def read_text(path: str | Path, *, what: str, max_bytes: int = MAX_BYTES) -> str:
    """`read_bytes`, decoded as UTF-8; a binary file is a ConfigError saying where it broke."""
    data = read_bytes(path, what=what, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})",
            hint="is it a binary file? save it as UTF-8 text",
        ) from None


def load_yaml(
    path: str | Path, *, what: str, max_bytes: int = MAX_BYTES, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH
) -> Any:
    """The YAML document in a bounded file, built only after its expanded size and depth were
    checked; None for an empty file."""
    text = read_text(path, what=what, max_bytes=max_bytes)
    loader = _BoundedLoader(text, max_nodes, max_depth)
    try:
        try:
            node = loader.get_single_node()
        except _TooDeep:
            raise ConfigError(
                f"{what} {path} nests deeper than {max_depth} levels",
                hint="flatten it; a config is a mapping of key: value",
            ) from None
        except _TooMany:
            raise ConfigError(
                f"{what} {path} holds more than {max_nodes} values",
                hint="a config that large is not one orchestrate reads; check the path",
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None
        if node is None:
            return None
        size, depth = _expanded(node, max_nodes)
        if size > max_nodes or depth > max_depth:
            raise ConfigError(
                f"{what} {path} expands to more than {max_nodes} values or {max_depth} levels through its "
                "aliases (*name)",
                hint="write the values out, or use fewer anchors (&name) and aliases",
            )
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None
    finally:
        loader.dispose()


class _TooDeep(Exception):
    pass


class _TooMany(Exception):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer stops at a nesting depth (before Python's recursion limit)
    and at a number of nodes (before a huge file is all parsed)."""

    def __init__(self, stream: str, max_nodes: int, max_depth: int) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._max_depth = max_depth
        self._max_nodes = max_nodes

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > self._max_depth:
                raise _TooDeep
            if self._nodes > self._max_nodes:
                raise _TooMany
            node: Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _expanded(root: Node, max_nodes: int) -> tuple[int, int]:
    """(values, depth) of the document with every alias expanded, computed over the node graph
    without expanding it (an alias is a shared node); a recursive alias counts as too many."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            children = _children(node)
            size[key] = min(1 + sum(size[id(c)] for c in children), max_nodes + 1)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            continue
        if key in size:
            continue
        if key in on_path:
            return max_nodes + 1, 0
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)
    return size[id(root)], depth[id(root)]
