"""A fake Kubernetes API server: enough of the REST API, its discovery and two controllers that
the official Python client and kubectl (1.27-1.33) work against it unchanged.

What it serves (JSON only, plain HTTP on 127.0.0.1):

- Discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>/<version>`` (the
  legacy documents; kubectl falls back to them when aggregated discovery is not offered), and a
  minimal ``/openapi/v3``.
- Namespaced REST for the kinds in ``KINDS``: get, list (label selectors with ``=``, ``==``,
  ``!=``, ``in``/``notin`` and existence; ``metadata.name``/``metadata.namespace`` field
  selectors), create, replace (optimistic concurrency on ``resourceVersion``), delete
  (``Foreground`` keeps the object with a ``deletionTimestamp`` until its dependents are gone,
  ``Background`` and ``Orphan`` remove it at once), the ``status`` and ``scale`` subresources,
  and watch streams (``ADDED``/``MODIFIED``/``DELETED``; ``410 Expired`` for a version older
  than the last ``compact()``).
- Patches: server-side apply (``application/apply-patch+yaml``, ``fieldManager`` required: a
  manager's fields that it no longer applies are removed; ``force`` is accepted; conflicts
  between managers are not modelled), JSON merge patch (RFC 7386), strategic merge patch
  (a merge patch that merges lists of objects by ``name``, which is what the kinds here key
  their lists by), JSON patch (RFC 6902: add, remove, replace, test).
- Object semantics: one global ``resourceVersion`` counter; ``generation`` bumped only when
  ``spec`` changes; ``uid`` and ``creationTimestamp`` on create; errors as ``Status`` bodies
  (404 NotFound, 409 AlreadyExists or Conflict, 422 Invalid, 400 BadRequest, 415).
- Controllers (simulated, no containers): a Deployment gets one ReplicaSet per pod template
  and its pods (owned through ``ownerReferences``, so deletes cascade), and its status moves
  as kubectl's rollout rules read it: ``observedGeneration`` at once, then, ``rollout_s``
  seconds later, updated, ready and available replicas and the ``Available`` and
  ``Progressing`` (``NewReplicaSetAvailable``) conditions. A Service gets a ``clusterIP``.
- A pod whose containers request more CPU than ``node_cpu`` (4 cores) is Unschedulable.
- Faults, keyed on the pod template's annotation ``FAULT_ANNOTATION``: ``ImagePullBackOff``,
  ``ErrImagePull``, ``CrashLoopBackOff``, ``CreateContainerConfigError`` and ``OOMKilled``
  leave the pods not ready with that reason in their container status; ``Unschedulable``
  leaves them Pending with a ``PodScheduled=False`` condition; ``ProgressDeadlineExceeded``
  (also the outcome of every other fault once ``progress_deadline_s`` has passed) sets the
  Deployment's ``Progressing`` condition to False with that reason.

- ``pods/<name>/log`` (``tailLines``): the lines of the pod template's ``LOG_ANNOTATION``.

- The pod and service proxy (``.../pods/NAME:PORT/proxy/PATH``, ``.../services/...``): the
  pods run nothing, so every proxied request goes to ``proxy_to`` (a scoring server the test
  started), or is answered 503 as a Service without endpoints is.

Not served (yet): KServe's InferenceService, running
pods' images (container mode), admission and defaulting beyond the fields above, protobuf and
Table output (kubectl prints client-side).
"""

from __future__ import annotations

import builtins
import copy
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

import yaml

FAULT_ANNOTATION = "fake.orchestrate.io/fault"
# A pod's log (``pods/<name>/log``): these lines of its template's annotation, newline-separated.
LOG_ANNOTATION = "fake.orchestrate.io/log"
POD_FAULTS = ("ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError", "OOMKilled")
GIT_VERSION = "v1.31.0"


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str
    subresources: tuple[str, ...] = ("status",)
    namespaced: bool = True
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS = (
    Kind("", "v1", "Namespace", "namespaces", namespaced=False, short_names=("ns",)),
    Kind("", "v1", "Pod", "pods", ("status", "log"), short_names=("po",)),
    Kind("", "v1", "Service", "services", short_names=("svc",)),
    Kind("", "v1", "Event", "events", subresources=(), short_names=("ev",)),
    Kind("apps", "v1", "Deployment", "deployments", ("status", "scale"), short_names=("deploy",)),
    Kind("apps", "v1", "ReplicaSet", "replicasets", ("status", "scale"), short_names=("rs",)),
    Kind("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short_names=("hpa",)),
    Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short_names=("pdb",)),
)
_BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


class ApiError(Exception):
    """Answered as a Status body."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- patches ---------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any, *, by_name: bool = False) -> Any:
    """RFC 7386; with ``by_name``, lists of objects that all have a ``name`` merge item by item
    (the strategic merge patch of the kinds here)."""
    if isinstance(patch, dict):
        result = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = merge_patch(result.get(key), value, by_name=by_name)
        return result
    if by_name and isinstance(patch, list) and isinstance(target, list) and _named(patch) and _named(target):
        merged = {item["name"]: item for item in target}
        for item in patch:
            merged[item["name"]] = merge_patch(merged.get(item["name"]), item, by_name=True)
        return list(merged.values())
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, dict) and "name" in item for item in items)


def json_patch(document: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902: add, remove, replace and test."""
    document = copy.deepcopy(document)
    for operation in operations:
        op, path = operation.get("op"), str(operation.get("path", ""))
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        if not parts:
            raise ApiError(422, "Invalid", f"json patch: unsupported path {path!r}")
        parent = document
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.get(part)
            if parent is None:
                raise ApiError(422, "Invalid", f"json patch: {path} does not exist")
        last = parts[-1]
        if op == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != operation.get("value"):
                raise ApiError(422, "Invalid", f"json patch: test of {path} failed")
        elif op in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op == "add":
                    parent.insert(index, operation.get("value"))
                else:
                    parent[index] = operation.get("value")
            else:
                if op == "replace" and last not in parent:
                    raise ApiError(422, "Invalid", f"json patch: {path} does not exist")
                parent[last] = operation.get("value")
        elif op == "remove":
            try:
                del parent[int(last) if isinstance(parent, list) else last]
            except (KeyError, IndexError):
                raise ApiError(422, "Invalid", f"json patch: {path} does not exist") from None
        else:
            raise ApiError(422, "Invalid", f"json patch: unsupported op {op!r}")
    return document


def _prune(current: Any, previous: Any, applied: Any) -> Any:
    """``current`` without the fields a manager applied before (``previous``) and no longer
    applies (``applied``): server-side apply's removal of fields a manager gave up."""
    if not isinstance(current, dict) or not isinstance(previous, dict):
        return current
    applied = applied if isinstance(applied, dict) else {}
    result = dict(current)
    for key, value in previous.items():
        if key not in applied:
            result.pop(key, None)
        elif key in result:
            result[key] = _prune(result[key], value, applied[key])
    return result


# -- selectors -------------------------------------------------------------------------------


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """A label selector as the API server parses it (equality, set and existence terms)."""
    terms: list[tuple[str, str, frozenset[str]]] = []  # (key, operator, values)
    for raw in _split_terms(selector):
        term = raw.strip()
        if not term:
            continue
        for operator in (" notin ", " in "):
            if operator in term:
                key, _, rest = term.partition(operator)
                values = frozenset(v.strip() for v in rest.strip().strip("()").split(","))
                terms.append((key.strip(), operator.strip(), values))
                break
        else:
            if "!=" in term:
                key, _, value = term.partition("!=")
                terms.append((key.strip(), "!=", frozenset([value.strip()])))
            elif "=" in term:
                key, _, value = term.replace("==", "=").partition("=")
                terms.append((key.strip(), "=", frozenset([value.strip()])))
            elif term.startswith("!"):
                terms.append((term[1:].strip(), "absent", frozenset()))
            else:
                terms.append((term, "present", frozenset()))

    def matches(labels: dict[str, str]) -> bool:
        for key, operator, values in terms:
            value = labels.get(key)
            if (
                (operator in ("=", "in") and value not in values)
                or (operator in ("!=", "notin") and value in values)
                or (operator == "absent" and key in labels)
                or (operator == "present" and key not in labels)
            ):
                return False
        return True

    return matches


def _split_terms(selector: str) -> Iterator[str]:
    depth, start = 0, 0
    for index, char in enumerate(selector):
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            yield selector[start:index]
            start = index + 1
    yield selector[start:]


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector object (matchLabels; matchExpressions with In, NotIn, Exists, DoesNotExist)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if (
            (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and labels.get(key) in values)
            or (operator == "Exists" and key not in labels)
            or (operator == "DoesNotExist" and key in labels)
        ):
            return False
    return True


# -- the server ------------------------------------------------------------------------------

Key = tuple[Kind, str, str]  # kind, namespace ("" when cluster-scoped), name


class FakeApiServer:
    """A WSGI app; ``start()`` serves it on 127.0.0.1 with werkzeug, ``url`` says where."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.applied: dict[tuple[Key, str], dict[str, Any]] = {}  # (object, field manager) -> config
        self.events: list[tuple[int, str, Key, dict[str, Any]]] = []  # the watch log
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.rollout_s = 0.3
        self.progress_deadline_s = 3.0  # stands for the Deployment's progressDeadlineSeconds
        self.foreground_delete_s = 0.2
        # Where the pod and service proxy sends requests (the pods run nothing): a scoring
        # server a test started, or None, answered 503 as a Service without endpoints is.
        self.proxy_to: str | None = None
        self.node_cpu = 4.0  # cores of the one node: a pod requesting more is Unschedulable
        self._compacted = 0
        self._counter = itertools.count(1)
        self._resource_version = 0
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._timers: list[threading.Timer] = []
        self._server: Any = None
        with self._lock:
            for namespace in ("default", "kube-system"):
                self._store(KINDS[0], {"metadata": {"name": namespace}}, namespace="")

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeApiServer:
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = make_server("127.0.0.1", port, self, threaded=True)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-kube-apiserver").start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        """A kubeconfig document for this server (no credentials: the fake asks for none)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }

    def compact(self) -> None:
        """Forget the watch history: a watch from an older resourceVersion gets 410 Expired."""
        with self._lock:
            self._compacted = self._resource_version
            self.events.clear()

    def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        with self._lock:
            for (k, ns, n), obj in self.objects.items():
                if k.kind == kind and n == name and ns == namespace:
                    return copy.deepcopy(obj)
        return None

    def list(self, kind: str, namespace: str = "default") -> list[dict[str, Any]]:
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (k, ns, _), obj in sorted(self.objects.items(), key=lambda item: item[0][1:])
                if k.kind == kind and ns == namespace
            ]

    # -- WSGI -----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        self.requests.append((method, path))
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        try:
            if method == "GET" and query.get("watch", "").lower() in ("1", "true"):
                stream = self._watch(path, query)
                start_response("200 OK", [("Content-Type", "application/json")])
                return stream
            if "/proxy" in path and path.startswith("/api/v1/namespaces/"):
                return self._proxy(method, path, environ, body, start_response)
            if method == "GET" and path.rstrip("/").endswith("/log"):
                text = self._pod_log(path, query).encode()
                start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
                return [text]
            status, document = self._handle(method, path, query, body, environ.get("CONTENT_TYPE", ""))
        except ApiError as error:
            status, document = error.code, error.status()
        data = json.dumps(document).encode()
        start_response(
            f"{status} {_REASONS.get(status, 'Unknown')}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
            ],
        )
        return [data]

    def _handle(self, method: str, path: str, query: dict[str, str], body: bytes, content_type: str) -> tuple[int, Any]:
        discovery = self._discovery(path)
        if discovery is not None:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {path}")
            return 200, discovery
        kind, namespace, name, sub = self._route(path)
        with self._lock:
            if method == "GET":
                if name is None:
                    return 200, self._list_document(kind, namespace, query)
                return 200, self._read(kind, namespace, name, sub)
            if method == "POST" and name is None:
                if kind.namespaced and not namespace:
                    raise ApiError(405, "MethodNotAllowed", f"create {kind.plural} in a namespace: {path}")
                return 201, self._create(kind, namespace, _decode(body, content_type), query)
            if name is None:
                raise ApiError(405, "MethodNotAllowed", f"{method} needs an object name: {path}")
            if method == "PUT":
                return 200, self._replace(kind, namespace, name, sub, _decode(body, content_type), query)
            if method == "PATCH":
                return self._patch(kind, namespace, name, sub, body, content_type, query)
            if method == "DELETE":
                options = _decode(body, "application/json") if body else {}
                policy = query.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
                return 200, self._delete(kind, namespace, name, policy)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {path}")

    # -- discovery --------------------------------------------------------------------------

    def _discovery(self, path: str) -> Any:
        path = path.rstrip("/") or "/"
        if path == "/version":
            major, minor = GIT_VERSION[1:].split(".")[:2]
            return {
                "major": major,
                "minor": minor,
                "gitVersion": GIT_VERSION,
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.22.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
            }
        if path == "/apis":
            groups = sorted({(k.group, k.version) for k in KINDS if k.group})
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                        "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                    }
                    for g, v in groups
                ],
            }
        if path == "/openapi/v3":
            return {
                "paths": {
                    gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=fake"}
                    for gv in sorted({("api/" if not k.group else "apis/") + k.api_version for k in KINDS})
                }
            }
        if path.startswith("/openapi/v3/"):
            return _openapi_group_version(path[len("/openapi/v3/") :])
        if path.startswith("/apis/") and path.count("/") == 2:
            group = path.split("/")[2]
            versions = sorted({k.version for k in KINDS if k.group == group})
            if not versions:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            return {
                "kind": "APIGroup",
                "apiVersion": "v1",
                "name": group,
                "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
            }
        parts = path.strip("/").split("/")
        if parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis"):
            group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
            kinds = [k for k in KINDS if (k.group, k.version) == (group, version)]
            if not kinds:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": kinds[0].api_version,
                "resources": [entry for k in kinds for entry in _resource_entries(k)],
            }
        return None

    def _route(self, path: str) -> tuple[Kind, str, str | None, str | None]:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        namespace = ""
        if len(rest) >= 2 and rest[0] == "namespaces" and (len(rest) > 2 or group):
            namespace, rest = rest[1], rest[2:]
        elif rest and rest[0] == "namespaces" and len(rest) == 2:
            rest = ["namespaces", rest[1]]  # a Namespace itself
        kind = _BY_PATH.get((group, version, rest[0])) if rest else None
        if kind is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in kind.subresources:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        if kind.namespaced and not namespace and name is not None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        if kind.namespaced and namespace and (KINDS[0], "", namespace) not in self.objects:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
        return kind, namespace, name, sub

    # -- verbs (called with the lock held) ------------------------------------------------

    def _key(self, kind: Kind, namespace: str, name: str) -> Key:
        return (kind, namespace if kind.namespaced else "", name)

    def _existing(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get(self._key(kind, namespace, name))
        if obj is None:
            group = f".{kind.group}" if kind.group else ""
            raise ApiError(404, "NotFound", f'{kind.plural}{group} "{name}" not found')
        return obj

    def _proxy(
        self, method: str, path: str, environ: dict[str, Any], body: bytes, start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """``/api/v1/namespaces/NS/{pods,services}/NAME[:PORT]/proxy/PATH``, forwarded to
        ``proxy_to`` as the API server forwards to a pod: method, body, Content-Type, status."""
        import urllib.error
        import urllib.request

        parts = path.split("/", 7)  # '', api, v1, namespaces, NS, plural, NAME[:PORT], proxy/...
        if len(parts) < 8 or parts[5] not in ("pods", "services") or not parts[7].startswith("proxy"):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        with self._lock:
            self._existing(_kind("Pod" if parts[5] == "pods" else "Service"), parts[4], parts[6].split(":")[0])
        if self.proxy_to is None:
            raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{parts[6]}"')
        rest = parts[7].removeprefix("proxy")
        query = environ.get("QUERY_STRING", "")
        request = urllib.request.Request(
            self.proxy_to + (rest or "/") + (f"?{query}" if query else ""),
            data=body or None,
            method=method,
            headers={"Content-Type": environ.get("CONTENT_TYPE") or "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, answer_type, data = answer.status, answer.headers.get("Content-Type", ""), answer.read()
        except urllib.error.HTTPError as error:
            status, answer_type, data = error.code, error.headers.get("Content-Type", ""), error.read()
        start_response(
            f"{status} {_REASONS.get(status, 'Unknown')}",
            [("Content-Type", answer_type), ("Content-Length", str(len(data)))],
        )
        return [data]

    def _pod_log(self, path: str, query: dict[str, str]) -> str:
        """The lines of the pod's ``LOG_ANNOTATION`` (``tailLines`` honoured); a container
        that has restarted has a log of its previous run too, and nothing else is modelled."""
        kind, namespace, name, sub = self._route(path)
        if kind.kind != "Pod" or name is None or sub != "log":
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        with self._lock:
            pod = self._existing(kind, namespace, name)
        annotations = pod["metadata"].get("annotations") or {}
        lines = str(annotations.get(LOG_ANNOTATION, "")).splitlines()
        if query.get("tailLines", "").isdigit():
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
        return "".join(line + "\n" for line in lines)

    def _read(self, kind: Kind, namespace: str, name: str, sub: str | None) -> dict[str, Any]:
        obj = self._existing(kind, namespace, name)
        return _scale(obj) if sub == "scale" else copy.deepcopy(obj)

    def _list_document(self, kind: Kind, namespace: str, query: dict[str, str]) -> dict[str, Any]:
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self._resource_version)},
            "items": [copy.deepcopy(obj) for obj in self._matching(kind, namespace, query)],
        }

    def _matching(self, kind: Kind, namespace: str, query: dict[str, str]) -> builtins.list[dict[str, Any]]:
        labels = label_matcher(query.get("labelSelector", ""))
        fields = _field_matcher(query.get("fieldSelector", ""))
        return [
            obj
            for (k, ns, _), obj in sorted(self.objects.items(), key=lambda item: item[0][1:])
            if k == kind
            and (not namespace or ns == namespace)
            and labels(obj["metadata"].get("labels") or {})
            and fields(obj)
        ]

    def _create(self, kind: Kind, namespace: str, obj: Any, query: dict[str, str]) -> dict[str, Any]:
        self._check_body(kind, obj)
        name = obj["metadata"].get("name")
        if not name and obj["metadata"].get("generateName"):
            name = obj["metadata"]["generateName"] + uuid.uuid4().hex[:5]
            obj["metadata"]["name"] = name
        if not name:
            raise ApiError(422, "Invalid", f"{kind.kind} is invalid: metadata.name: Required value")
        if self._key(kind, namespace, name) in self.objects:
            group = f".{kind.group}" if kind.group else ""
            raise ApiError(409, "AlreadyExists", f'{kind.plural}{group} "{name}" already exists')
        if query.get("dryRun") == "All":
            return dict(obj)
        return self._store(kind, obj, namespace=namespace)

    def _replace(
        self, kind: Kind, namespace: str, name: str, sub: str | None, obj: Any, query: dict[str, str]
    ) -> dict[str, Any]:
        current = self._existing(kind, namespace, name)
        if sub == "scale":
            return self._set_replicas(current, int((obj.get("spec") or {}).get("replicas", 0)))
        self._check_body(kind, obj)
        version = obj["metadata"].get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            group = f".{kind.group}" if kind.group else ""
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.plural}{group} "{name}": '
                "the object has been modified; please apply your changes to the "
                "latest version and try again",
            )
        if sub == "status":
            updated = dict(current, status=obj.get("status", {}))
        else:
            updated = dict(obj, status=current.get("status", {}))
        if query.get("dryRun") == "All":
            return updated
        return self._store(kind, updated, namespace=namespace, previous=current)

    def _patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        sub: str | None,
        body: bytes,
        content_type: str,
        query: dict[str, str],
    ) -> tuple[int, dict[str, Any]]:
        media = content_type.split(";")[0].strip()
        key = self._key(kind, namespace, name)
        current = self.objects.get(key)
        if media == "application/apply-patch+yaml":
            manager = query.get("fieldManager")
            if not manager:
                raise ApiError(400, "BadRequest", "PATCH with an apply patch requires a fieldManager")
            applied = _decode(body, "application/yaml")
            self._check_body(kind, applied)
            if applied["metadata"].get("name") not in (None, name):
                raise ApiError(400, "BadRequest", "the name of the object does not match the name in the URL")
            applied["metadata"]["name"] = name
            if current is None:
                if sub is not None:
                    raise self._not_found(kind, name)
                self.applied[(key, manager)] = copy.deepcopy(applied)
                return 201, self._store(kind, copy.deepcopy(applied), namespace=namespace, managers={manager: "Apply"})
            previous = self.applied.get((key, manager), {})
            base = _prune(copy.deepcopy(current), previous, applied)
            # Lists are replaced whole: one manager per object is what is modelled.
            updated = merge_patch(base, _without_nones(applied))
            self.applied[(key, manager)] = copy.deepcopy(applied)
            managers = {manager: "Apply"}
        else:
            if current is None:
                raise self._not_found(kind, name)
            patch = _decode(body, "application/json")
            if media == "application/merge-patch+json":
                updated = merge_patch(current, patch)
            elif media == "application/strategic-merge-patch+json":
                updated = merge_patch(current, patch, by_name=True)
            elif media == "application/json-patch+json":
                updated = json_patch(current, patch if isinstance(patch, list) else [])
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format "
                    f"- accepted media types include: "
                    f"application/json-patch+json, "
                    f"application/merge-patch+json, "
                    f"application/apply-patch+yaml (got {media!r})",
                )
            managers = {query.get("fieldManager") or "kubectl-patch": "Update"}
        if sub == "scale":
            return 200, self._set_replicas(current, int((updated.get("spec") or {}).get("replicas", 0)))
        if sub == "status":
            updated = dict(current, status=updated.get("status", {}))
        elif current is not None:
            updated["status"] = current.get("status", {})
        if query.get("dryRun") == "All":
            return 200, updated
        return 200, self._store(kind, updated, namespace=namespace, previous=current, managers=managers)

    def _delete(self, kind: Kind, namespace: str, name: str, policy: str) -> dict[str, Any]:
        key = self._key(kind, namespace, name)
        obj = self._existing(kind, namespace, name)
        dependents = self._dependents(obj)
        if policy == "Foreground" and dependents:
            if not obj["metadata"].get("deletionTimestamp"):
                marked = copy.deepcopy(obj)
                marked["metadata"]["deletionTimestamp"] = _now()
                marked["metadata"]["finalizers"] = ["foregroundDeletion"]
                obj = self._store(kind, marked, namespace=namespace, previous=obj)
                for dependent in dependents:
                    self._delete(dependent[0], dependent[1], dependent[2], "Foreground")
                self._later(self.foreground_delete_s, lambda: self._finish_delete(key))
            return copy.deepcopy(obj)
        if policy != "Orphan":
            for dependent in dependents:
                self._delete(dependent[0], dependent[1], dependent[2], "Background")
        self._remove(key)
        return copy.deepcopy(obj)

    def _finish_delete(self, key: Key) -> None:
        with self._lock:
            if key in self.objects:
                self._remove(key)

    def _remove(self, key: Key) -> None:
        obj = self.objects.pop(key)
        for held in [k for k in self.applied if k[0] == key]:
            del self.applied[held]
        self._record("DELETED", key, obj, bump=True)

    def _dependents(self, owner: dict[str, Any]) -> builtins.list[Key]:
        uid = owner["metadata"]["uid"]
        return [
            key
            for key, obj in self.objects.items()
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def _not_found(self, kind: Kind, name: str) -> ApiError:
        group = f".{kind.group}" if kind.group else ""
        return ApiError(404, "NotFound", f'{kind.plural}{group} "{name}" not found')

    @staticmethod
    def _check_body(kind: Kind, obj: Any) -> None:
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            raise ApiError(400, "BadRequest", f"the body is not a {kind.kind} object")
        if obj.get("kind") not in (None, kind.kind) or obj.get("apiVersion") not in (None, kind.api_version):
            raise ApiError(
                400,
                "BadRequest",
                f"the body is a {obj.get('apiVersion')}/{obj.get('kind')}, not {kind.api_version}/{kind.kind}",
            )

    def _store(
        self,
        kind: Kind,
        obj: dict[str, Any],
        *,
        namespace: str,
        previous: dict[str, Any] | None = None,
        managers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
        meta = obj["metadata"]
        if kind.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if previous is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
        else:
            for field in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
                if field in previous["metadata"]:
                    meta[field] = previous["metadata"][field]
                elif field in meta and field != "deletionTimestamp":
                    meta.pop(field)
            if obj.get("spec") != previous.get("spec"):
                meta["generation"] = int(previous["metadata"].get("generation", 1)) + 1
        if managers:
            entries = {
                entry["manager"]: entry for entry in (previous or {}).get("metadata", {}).get("managedFields") or []
            }
            for manager, operation in managers.items():
                entries[manager] = {
                    "manager": manager,
                    "operation": operation,
                    "apiVersion": kind.api_version,
                    "time": _now(),
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {},
                }
            meta["managedFields"] = list(entries.values())
        elif previous is not None and "managedFields" in previous["metadata"]:
            meta["managedFields"] = previous["metadata"]["managedFields"]
        if kind.kind == "Service":
            number = next(self._counter)
            obj.setdefault("spec", {}).setdefault("clusterIP", f"10.96.{number // 250 % 250}.{number % 250 + 1}")
        self._resource_version += 1
        meta["resourceVersion"] = str(self._resource_version)
        key = self._key(kind, namespace, meta["name"])
        self.objects[key] = obj
        self._record("ADDED" if previous is None else "MODIFIED", key, obj, bump=False)
        if kind.kind == "Deployment" and (previous is None or meta["generation"] != previous["metadata"]["generation"]):
            self._reconcile_deployment(key)
        return copy.deepcopy(obj)

    def _record(self, event: str, key: Key, obj: dict[str, Any], *, bump: bool) -> None:
        if bump:
            self._resource_version += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._resource_version)
        self.events.append((self._resource_version, event, key, copy.deepcopy(obj)))
        self._changed.notify_all()

    def _later(self, delay: float, work: Callable[[], None]) -> None:
        timer = threading.Timer(delay, work)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _set_replicas(self, obj: dict[str, Any], replicas: int) -> dict[str, Any]:
        kind = next(k for k in KINDS if k.kind == obj["kind"])
        updated = copy.deepcopy(obj)
        updated.setdefault("spec", {})["replicas"] = replicas
        stored = self._store(kind, updated, namespace=obj["metadata"]["namespace"], previous=obj)
        return _scale(stored)

    # -- the Deployment controller (lock held) --------------------------------------------

    def _reconcile_deployment(self, key: Key) -> None:
        """Status at once as the controller's first pass sets it, pods and ReplicaSet of the
        current template, then the rollout's outcome ``rollout_s`` (or the progress deadline)
        later."""
        deployment = self.objects[key]
        spec = deployment.get("spec") or {}
        template = spec.get("template") or {}
        replicas = int(spec.get("replicas", 1))
        generation = deployment["metadata"]["generation"]
        fault = ((template.get("metadata") or {}).get("annotations") or {}).get(FAULT_ANNOTATION)
        if fault is None and _cpu_requested(template) > self.node_cpu:
            fault = "Unschedulable"
        namespace = key[1]
        template_hash = uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(template, sort_keys=True)).hex[:10]
        replica_set = f"{key[2]}-{template_hash}"
        rs_kind, pod_kind = _kind("ReplicaSet"), _kind("Pod")
        owner = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": key[2],
            "uid": deployment["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        for other in [
            k
            for k, obj in self.objects.items()
            if k[0] == rs_kind
            and k[1] == namespace
            and any(r.get("uid") == owner["uid"] for r in obj["metadata"].get("ownerReferences") or [])
            and k[2] != replica_set
        ]:
            self._delete(other[0], other[1], other[2], "Background")  # the old template's pods go
        labels = dict((template.get("metadata") or {}).get("labels") or {}, **{"pod-template-hash": template_hash})
        rs_key = (rs_kind, namespace, replica_set)
        if rs_key not in self.objects:
            rs = self._store(
                rs_kind,
                {
                    "metadata": {"name": replica_set, "labels": labels, "ownerReferences": [owner]},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template},
                },
                namespace=namespace,
            )
            rs_owner = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": replica_set,
                "uid": rs["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
            for index in range(replicas):
                self._store(
                    pod_kind,
                    {
                        "metadata": {
                            "name": f"{replica_set}-{index}{uuid.uuid4().hex[:4]}",
                            "labels": labels,
                            "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                            "ownerReferences": [rs_owner],
                        },
                        "spec": copy.deepcopy(template.get("spec") or {}),
                        "status": _pod_status(template, fault, ready=False),
                    },
                    namespace=namespace,
                )
        self._set_status(
            key,
            {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": 0,
                "readyReplicas": 0,
                "availableReplicas": 0,
                "unavailableReplicas": replicas,
                "conditions": [
                    _condition(
                        "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{replica_set}" is progressing.'
                    )
                ],
            },
        )
        if fault in POD_FAULTS or fault == "Unschedulable":
            self._later(self.rollout_s, lambda: self._settle(key, generation, replica_set, fault))
            self._later(self.progress_deadline_s, lambda: self._deadline(key, generation, replica_set))
        elif fault == "ProgressDeadlineExceeded":
            self._later(self.rollout_s, lambda: self._deadline(key, generation, replica_set))
        else:
            self._later(self.rollout_s, lambda: self._settle(key, generation, replica_set, None))

    def _settle(self, key: Key, generation: int, replica_set: str, fault: str | None) -> None:
        with self._lock:
            deployment = self.objects.get(key)
            if deployment is None or deployment["metadata"]["generation"] != generation:
                return  # superseded or deleted
            template = (deployment.get("spec") or {}).get("template") or {}
            for pod_key, pod in list(self.objects.items()):
                if (
                    pod_key[0].kind == "Pod"
                    and pod_key[1] == key[1]
                    and any(r.get("name") == replica_set for r in pod["metadata"].get("ownerReferences") or [])
                ):
                    self._store(
                        pod_key[0],
                        dict(pod, status=_pod_status(template, fault, ready=fault is None)),
                        namespace=key[1],
                        previous=pod,
                    )
            if fault is not None:
                return
            replicas = int((deployment.get("spec") or {}).get("replicas", 1))
            self._set_status(
                key,
                {
                    "observedGeneration": generation,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                    "conditions": [
                        _condition(
                            "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
                        ),
                        _condition(
                            "Progressing",
                            "True",
                            "NewReplicaSetAvailable",
                            f'ReplicaSet "{replica_set}" has successfully progressed.',
                        ),
                    ],
                },
            )

    def _deadline(self, key: Key, generation: int, replica_set: str) -> None:
        with self._lock:
            deployment = self.objects.get(key)
            if deployment is None or deployment["metadata"]["generation"] != generation:
                return
            status = dict(deployment.get("status") or {})
            status["conditions"] = [
                _condition(
                    "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."
                ),
                _condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{replica_set}" has timed out progressing.',
                ),
            ]
            self._set_status(key, status)

    def _set_status(self, key: Key, status: dict[str, Any]) -> None:
        current = self.objects[key]
        self._store(key[0], dict(current, status=status), namespace=key[1], previous=current)

    # -- watch ----------------------------------------------------------------------------

    def _watch(self, path: str, query: dict[str, str]) -> Iterator[bytes]:
        kind, namespace, name, _sub = self._route(path)
        if name is not None:  # the old form: /watch on one object
            query = dict(query, fieldSelector=f"metadata.name={name}")
        labels = label_matcher(query.get("labelSelector", ""))
        fields = _field_matcher(query.get("fieldSelector", ""))
        deadline = time.monotonic() + min(float(query.get("timeoutSeconds") or 60), 300)
        since = query.get("resourceVersion") or "0"
        initial: builtins.list[dict[str, Any]] = []
        with self._lock:  # nothing is written to the client while the lock is held
            start = int(since) if since.isdigit() else 0
            expired = start and start < self._compacted
            if start == 0:  # "any": the current state as ADDED events first
                initial = [copy.deepcopy(obj) for obj in self._matching(kind, namespace, query)]
                start = self._resource_version
            compacted = self._compacted
        # The headers go now, as the API server sends them: client-go's reflector cannot stop a
        # watch whose response has not begun, so a quiet watch would hold kubectl at exit.
        yield b""
        if expired:
            error = ApiError(410, "Expired", f"too old resource version: {start} ({compacted})")
            yield (json.dumps({"type": "ERROR", "object": error.status()}) + "\n").encode()
            return
        for obj in initial:
            yield (json.dumps({"type": "ADDED", "object": obj}) + "\n").encode()
        position = start
        while time.monotonic() < deadline:
            with self._lock:
                pending = [e for e in self.events if e[0] > position]
                if not pending:
                    self._changed.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                    continue
            for version, event, (k, ns, _), obj in pending:
                position = max(position, version)
                if (
                    k == kind
                    and (not namespace or ns == namespace)
                    and labels(obj["metadata"].get("labels") or {})
                    and fields(obj)
                ):
                    yield (json.dumps({"type": event, "object": obj}) + "\n").encode()


def _decode(body: bytes, content_type: str) -> Any:
    try:
        if "yaml" in content_type:
            return yaml.safe_load(body.decode()) if body else {}
        return json.loads(body) if body else {}
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError(400, "BadRequest", f"the request body is not valid: {exc}") from None


def _without_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nones(v) for v in value]
    return value


def _field_matcher(selector: str) -> Callable[[dict[str, Any]], bool]:
    terms: list[tuple[str, str, bool]] = []  # (metadata attribute, value, negated)
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negated = "!=" in term
        field, _, value = term.replace("!=", "=").replace("==", "=").partition("=")
        if field not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'field label not supported: "{field}"')
        terms.append((field.split(".")[1], value, negated))
    return lambda obj: all((obj["metadata"].get(a) == v) != n for a, v, n in terms)


def _resource_entries(kind: Kind) -> list[dict[str, Any]]:
    entries = [
        {
            "name": kind.plural,
            "singularName": kind.kind.lower(),
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": _VERBS,
            "shortNames": list(kind.short_names),
        }
    ]
    for sub in kind.subresources:
        entry = {
            "name": f"{kind.plural}/{sub}",
            "singularName": "",
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": ["get", "patch", "update"],
        }
        if sub == "scale":
            entry.update(kind="Scale", group="autoscaling", version="v1")
        entries.append(entry)
    return entries


def _openapi_group_version(group_version: str) -> dict[str, Any]:
    """Enough of a group version's OpenAPI v3 document for kubectl: each kind's PATCH takes
    ``fieldValidation``, so kubectl leaves validation to the server instead of asking for
    schemas (this fake checks no fields)."""
    kinds = [k for k in KINDS if ("api/" if not k.group else "apis/") + k.api_version == group_version]
    if not kinds:
        raise ApiError(404, "NotFound", f"no OpenAPI document for {group_version}")
    paths = {}
    for kind in kinds:
        scope = "/namespaces/{namespace}" if kind.namespaced else ""
        paths[f"/{group_version}{scope}/{kind.plural}/{{name}}"] = {
            "patch": {
                "x-kubernetes-group-version-kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
                "parameters": [
                    {"name": name, "in": "query", "schema": {"type": "string"}}
                    for name in ("dryRun", "fieldManager", "fieldValidation", "force")
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _kind(name: str) -> Kind:
    return next(k for k in KINDS if k.kind == name)


def _scale(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: obj["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion")},
        "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 1))},
        "status": {"replicas": int((obj.get("status") or {}).get("replicas", 0))},
    }


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
    now = _now()
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def _cpu_requested(template: dict[str, Any]) -> float:
    """Cores the pod template's containers request (``500m``, ``2``)."""
    total = 0.0
    for container in (template.get("spec") or {}).get("containers") or []:
        cpu = str(((container.get("resources") or {}).get("requests") or {}).get("cpu", "0"))
        total += float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return total


def _pod_status(template: dict[str, Any], fault: str | None, *, ready: bool) -> dict[str, Any]:
    containers = ((template.get("spec") or {}).get("containers")) or [{"name": "main", "image": ""}]
    if fault == "Unschedulable":
        return {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient cpu.",
                }
            ],
        }
    statuses = []
    for container in containers:
        state: dict[str, Any]
        last: dict[str, Any] = {}
        restarts = 0
        if ready:
            state = {"running": {"startedAt": _now()}}
        elif fault == "OOMKilled":
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}}
            last = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
            restarts = 3
        elif fault == "CrashLoopBackOff":
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}}
            last = {"terminated": {"reason": "Error", "exitCode": 1}}
            restarts = 3
        elif fault in POD_FAULTS:
            state = {"waiting": {"reason": fault, "message": f'{fault}: image "{container.get("image")}"'}}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        statuses.append(
            {
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": f"docker-pullable://{container.get('image', '')}" if ready else "",
                "ready": ready,
                "restartCount": restarts,
                "state": state,
                "lastState": last,
                "started": ready,
            }
        )
    return {
        "phase": "Running" if ready or fault in ("CrashLoopBackOff", "OOMKilled") else "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
        ],
        "containerStatuses": statuses,
    }


_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
    409: "Conflict",
    410: "Gone",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
}
