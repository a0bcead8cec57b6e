"""Loading a model through the ``python_function`` contract, and calling it.

``load_model(path)`` reads ``MLmodel``, then loads the model one of three ways:

- *native*: for ``mlflow.sklearn`` models, the estimator is deserialised here exactly as
  ``mlflow.sklearn._load_pyfunc`` does (skops with the model's trusted types, pickle or
  cloudpickle; refused when ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is false). Importing
  mlflow costs about a second of cold start, for nothing this flavor needs.
- *mlflow*: ``mlflow.pyfunc.load_model`` when mlflow is importable, so every flavor works.
- *plain*: without mlflow, add the ``code/`` paths, import ``loader_module`` and call its
  ``_load_pyfunc(data_path)``.

When this package can enforce the whole signature itself (``Signature.enforceable``), the
model's predict function is called directly with the enforced input; otherwise the call goes
through ``PyFuncModel.predict`` so MLflow applies its own schema rules.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from scoring._errors import ModelLoadError
from scoring._flavors import flavor_environment
from scoring._schema import Enforcer, Signature, parse_signature

# Import names whose pip distribution is named differently.
_DISTRIBUTIONS: Mapping[str, str] = {
    "sklearn": "scikit-learn",
    "cv2": "opencv-python",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "skimage": "scikit-image",
    "google": "protobuf",
    "bs4": "beautifulsoup4",
}


class LoadedModel:
    """A loaded model with its metadata, signature and a ready-to-call ``predict``."""

    def __init__(
        self,
        path: str,
        mlmodel: Mapping[str, Any],
        impl: Any,
        pyfunc: Any,
        loader: str,
        load_seconds: float,
    ) -> None:
        self.path = path
        self.mlmodel = mlmodel
        self.impl = impl
        self.pyfunc = pyfunc
        self.loader = loader
        self.load_seconds = load_seconds
        conf = mlmodel.get("flavors", {}).get("python_function", {})
        self.loader_module: str = conf.get("loader_module", "")
        self.flavors = tuple(sorted(mlmodel.get("flavors", {})))
        self.mlflow_version: str | None = mlmodel.get("mlflow_version")
        self.signature: Signature = parse_signature(mlmodel)
        self.enforcer = Enforcer(self.signature)
        predict_fn_name = conf.get("predict_fn") or "predict"
        fn = getattr(pyfunc, "_predict_fn", None) if pyfunc is not None else None
        if fn is None:
            fn = getattr(impl, predict_fn_name, None) or impl.predict
        self._fn: Callable[..., Any] = fn
        param = _params_parameter(fn)
        self._accepts_params = param
        # Direct call when our enforcement is all MLflow would do, or without mlflow at all.
        sig = self.signature
        self.direct = pyfunc is None or sig.enforceable or (sig.inputs is None and not sig.from_type_hint)

        self._array_fn: Callable[..., Any] | None = None
        self._ndarray: type | None = None
        if self.direct:
            self._enable_array_input(predict_fn_name)

    def _enable_array_input(self, predict_fn_name: str) -> None:
        """Let a scikit-learn estimator take the enforced rows as a 2-D array.

        Given a DataFrame, scikit-learn spends ~0.4 ms per call checking column names and
        pandas dtypes before converting it to exactly the array built here. When the
        signature's columns are the estimator's ``feature_names_in_`` in order, all of one
        numeric dtype, a shallow copy of the estimator without ``feature_names_in_`` takes
        the array directly (shape is still checked); for a ``Pipeline``, whose
        ``feature_names_in_`` is its first step's, a copy whose first step is such a copy.
        Enabled only if probe predictions are identical both ways and the array call emits no
        warning; otherwise nothing changes.
        """
        enforcer = self.enforcer
        estimator = getattr(self.impl, "sklearn_model", None)
        if enforcer.columns is None or enforcer._uniform_dtype is None or estimator is None:
            return
        names = getattr(estimator, "feature_names_in_", None)
        if names is None or [str(n) for n in names] != enforcer._names:
            return
        import warnings

        import numpy as np

        lean = _without_feature_names(estimator)
        if lean is None:
            return
        array_fn = getattr(lean, predict_fn_name, None)
        if array_fn is None:
            return
        width = len(enforcer._names)
        probe = np.vstack([np.zeros(width), np.arange(1, width + 1), np.linspace(-2.5, 7.5, width)]).astype(
            enforcer._uniform_dtype
        )
        frame = enforcer._pd.DataFrame(probe, columns=enforcer._names)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                expected = self._fn(frame)
                got = array_fn(probe)
        except Exception:  # noqa: BLE001 - any failure just keeps the DataFrame path
            return
        if caught or not np.array_equal(np.asarray(expected), np.asarray(got), equal_nan=True):
            return
        self._array_fn = array_fn
        self._ndarray = np.ndarray
        enforcer.array_input = True

    def predict(self, data: Any, params: dict[str, Any] | None) -> Any:
        """The model's predictions for already enforced ``data``."""
        if type(data) is self._ndarray:
            return self._array_fn(data)  # type: ignore[misc]
        if self.direct:
            if self._accepts_params:
                return self._fn(data, params=params)
            return self._fn(data)
        return self.pyfunc.predict(data, params=params)


def _without_feature_names(estimator: Any) -> Any:
    """A shallow copy of a fitted scikit-learn estimator that no longer knows its input's
    column names, so it takes a bare array without a warning; None when it cannot be made."""
    import copy

    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list) and steps:  # a Pipeline: the names are its first step's
        name, first = steps[0]
        lean_first = _without_feature_names(first)
        if lean_first is None:
            return None
        lean = copy.copy(estimator)
        lean.steps = [(name, lean_first), *steps[1:]]
        return lean
    lean = copy.copy(estimator)
    try:
        del lean.feature_names_in_
    except AttributeError:  # not set on the instance (a property, a string such as "passthrough")
        return None
    return lean


def _params_parameter(fn: Callable[..., Any]) -> bool:
    try:
        param = inspect.signature(fn).parameters.get("params")
    except (TypeError, ValueError):
        return False
    return param is not None and param.kind != inspect.Parameter.VAR_KEYWORD


def read_mlmodel(path: str) -> dict[str, Any]:
    """The parsed ``MLmodel`` file of the model directory ``path``."""
    import yaml

    mlmodel_path = os.path.join(path, "MLmodel")
    if not os.path.isfile(mlmodel_path):
        raise ModelLoadError(f"no MLmodel file in {path}: not an MLflow model directory")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(mlmodel_path, encoding="utf-8") as f:
        doc = yaml.load(f, Loader=loader)
    if not isinstance(doc, dict):
        raise ModelLoadError(f"{mlmodel_path} is not a YAML mapping")
    if "python_function" not in (doc.get("flavors") or {}):
        raise ModelLoadError(f"{mlmodel_path} has no python_function flavor; it cannot be served")
    return doc


def _mlflow_importable() -> bool:
    return importlib.util.find_spec("mlflow") is not None


def _truthy_env(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("true", "1")


class _SklearnModel:
    """What ``mlflow.sklearn._load_pyfunc`` returns, without importing mlflow."""

    def __init__(self, estimator: Any) -> None:
        self.sklearn_model = estimator
        for name in ("predict_proba", "predict_log_proba", "predict_joint_log_proba", "score"):
            if fn := getattr(estimator, name, None):
                setattr(self, name, fn)

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        return self.sklearn_model.predict(data)


def _load_sklearn(path: str, mlmodel: Mapping[str, Any]) -> _SklearnModel:
    flavor = mlmodel.get("flavors", {}).get("sklearn") or {}
    pyfunc_conf = mlmodel["flavors"]["python_function"]
    fmt = flavor.get("serialization_format", "pickle")
    model_file = os.path.join(path, pyfunc_conf.get("model_path") or flavor["pickled_model"])
    if not _truthy_env("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", True):
        raise ModelLoadError(
            "deserializing this model is disallowed because MLFLOW_ALLOW_PICKLE_DESERIALIZATION "
            "is not true; set it to true to load models from trusted sources"
        )
    if fmt == "skops":
        skops_io = _import_skops_io()
        estimator = skops_io.load(model_file, trusted=flavor.get("skops_trusted_types"))
    elif fmt == "cloudpickle":
        import cloudpickle

        with open(model_file, "rb") as f:
            estimator = cloudpickle.load(f)
    elif fmt == "pickle":
        import pickle

        with open(model_file, "rb") as f:
            estimator = pickle.load(f)
    else:
        raise ModelLoadError(f"unknown sklearn serialization format {fmt!r} in {path}/MLmodel")
    return _SklearnModel(estimator)


def _import_skops_io() -> Any:
    """``skops.io``, imported without pytest.

    Importing ``skops.io`` lists every scikit-learn estimator (its default trusted types),
    which imports ``sklearn.utils._testing``, which imports pytest when it is installed
    (0.13 s of cold start, for test helpers the server never uses). pytest is hidden while
    skops.io imports, unless something imported it already (a test session).
    """
    if "pytest" in sys.modules:
        import skops.io

        return skops.io
    sys.modules["pytest"] = None  # type: ignore[assignment]  # `import pytest` raises ImportError
    try:
        import skops.io
    finally:
        if "pytest" in sys.modules and sys.modules["pytest"] is None:
            del sys.modules["pytest"]
    return skops.io


def _add_code_paths(path: str, conf: Mapping[str, Any]) -> None:
    code = conf.get("code")
    if code:
        code_path = os.path.join(path, code)
        if code_path not in sys.path:
            sys.path.insert(0, code_path)


def _load_plain(path: str, conf: Mapping[str, Any]) -> Any:
    _add_code_paths(path, conf)
    module = importlib.import_module(conf["loader_module"])
    data_path = os.path.join(path, conf["data"]) if conf.get("data") else path
    return module._load_pyfunc(data_path)


def _missing_module_message(exc: ModuleNotFoundError) -> tuple[str, str]:
    module = (exc.name or str(exc)).split(".")[0]
    dist = _DISTRIBUTIONS.get(module, module.replace("_", "-"))
    return module, (
        f"model needs Python module '{module}', which is not installed in its environment; "
        f"add it with --pip-requirements-override {dist}"
    )


def load_model(path: str, loader: str = "auto") -> LoadedModel:
    """Load the MLflow model directory ``path``; ``loader`` is auto, mlflow or native.

    Raises ``ModelLoadError`` with a one-line reason (the missing module and the fix, for a
    ``ModuleNotFoundError``).
    """
    path = os.path.abspath(path.removeprefix("file://"))
    if not os.path.isdir(path):
        raise ModelLoadError(f"model directory {path} does not exist")
    start = time.perf_counter()
    try:
        mlmodel = read_mlmodel(path)
        conf = mlmodel["flavors"]["python_function"]
        for name, value in flavor_environment(mlmodel["flavors"]).items():
            os.environ.setdefault(name, value)  # one the deployer set wins
        pyfunc = None
        if loader != "mlflow" and conf.get("loader_module") == "mlflow.sklearn":
            impl: Any = _load_sklearn(path, mlmodel)
            used = "native"
        elif loader != "native" and _mlflow_importable():
            import mlflow.pyfunc

            pyfunc = mlflow.pyfunc.load_model(path)
            impl = pyfunc._model_impl
            used = "mlflow"
        else:
            if not conf.get("loader_module"):
                raise ModelLoadError(f"{path}/MLmodel names no python_function loader_module")
            impl = _load_plain(path, conf)
            used = "plain"
        model = LoadedModel(path, mlmodel, impl, pyfunc, used, time.perf_counter() - start)
    except ModelLoadError:
        raise
    except ModuleNotFoundError as exc:
        module, message = _missing_module_message(exc)
        raise ModelLoadError(message, missing_module=module) from exc
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None:  # MLflow wraps import failures in its own exceptions
            if isinstance(cause, ModuleNotFoundError):
                module, message = _missing_module_message(cause)
                raise ModelLoadError(message, missing_module=module) from exc
            cause = cause.__cause__ or cause.__context__
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise ModelLoadError(f"cannot load model from {path}: {type(exc).__name__}: {first_line}") from exc
    return model
