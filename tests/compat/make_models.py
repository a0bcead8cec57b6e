"""Save the flavor compatibility suite's models with MLflow, as a user's training script would.

    python tests/compat/make_models.py OUT_DIR [NAME ...]

Runs as a script (not inside pytest) so the custom models' classes live in ``__main__`` and
cloudpickle saves them by value, exactly as in a notebook or a training script, and so the
requirements MLflow infers are the ones it would infer for a user. Each model directory
gets ``compat_requests.json``: the requests the differential tests send to both servers,
good ones and bad ones (``[{"name", "content_type", "body"}]``).
"""

from __future__ import annotations

import json
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

JSON = "application/json"
CSV = "text/csv"


def _request(name: str, body: Any, content_type: str = JSON) -> dict[str, str]:
    text = body if isinstance(body, str) else json.dumps(body)
    return {"name": name, "content_type": content_type, "body": text}


def _bad_requests(valid: Any) -> list[dict[str, str]]:
    """Requests both servers must refuse with the same status code."""
    return [
        _request("bad: not JSON", '{"dataframe_split": '),
        _request("bad: no input key", {"rows": valid}),
        _request("bad: content type", json.dumps(valid), "text/plain"),
    ]


def _frame_requests(frame: pd.DataFrame, params: dict[str, Any] | None = None) -> list[dict[str, str]]:
    extra = {"params": params} if params else {}
    split = json.loads(frame.to_json(orient="split", index=False))
    records = json.loads(frame.to_json(orient="records"))
    return [
        _request("dataframe_split", {"dataframe_split": split, **extra}),
        _request("dataframe_records", {"dataframe_records": records, **extra}),
        _request("csv", frame.to_csv(index=False), CSV),
        *_bad_requests({"dataframe_split": split}),
    ]


def _write(path: Path, requests: list[dict[str, str]]) -> None:
    (path / "compat_requests.json").write_text(json.dumps(requests, indent=1))


# ---- custom pyfunc models (classes in __main__: saved by value) ---------------------------


class ScaledSum(mlflow.pyfunc.PythonModel):
    """The issue's model: it names neither numpy nor pandas, so MLflow writes only `mlflow`
    and `cloudpickle` to requirements.txt; no scikit-learn; params; a DataFrame out."""

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        total = (model_input["x"] + model_input["y"]) * (params or {}).get("scale", 1.0)
        return model_input.assign(total=total, positive=total > 0)[["total", "positive"]]


class TensorDouble(mlflow.pyfunc.PythonModel):
    """Tensor in, tensor out."""

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        return (np.asarray(model_input) * 2.0).sum(axis=1)


class Greeter(mlflow.pyfunc.PythonModel):
    """Strings in, strings out."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        return [f"hello, {name}" for name in model_input["name"]]


class RowSums(mlflow.pyfunc.PythonModel):
    """Saved without a signature or an input example: input as MLflow parses it."""

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        return pd.DataFrame(model_input).sum(axis=1).tolist()


def pyfunc_plain(path: Path) -> None:
    from mlflow.models import infer_signature

    frame = pd.DataFrame({"x": [1.0, -4.0, 2.5], "y": [2.0, 1.0, -0.5]})
    params = {"scale": 1.0}
    signature = infer_signature(frame, ScaledSum().predict(None, frame, params), params)
    # No input example: MLflow then infers requirements from loading alone (mlflow, cloudpickle).
    mlflow.pyfunc.save_model(str(path), python_model=ScaledSum(), signature=signature)
    _write(path, [
        *_frame_requests(frame, {"scale": 3.0}),
        _request("no params", {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}),
        _request("bad: missing column", {"dataframe_records": [{"x": 1.0}]}),
        _request("bad: param type", {"dataframe_records": [{"x": 1.0, "y": 2.0}], "params": {"scale": "big"}}),
    ])


def pyfunc_artifacts_code(path: Path, scratch: Path) -> None:
    """A model class in a module of its own (code_paths) reading an artifact in load_context."""
    from mlflow.models import infer_signature

    code = scratch / "compat_lookup"
    code.mkdir(parents=True, exist_ok=True)
    (code / "__init__.py").write_text(textwrap.dedent('''
        import json

        import mlflow.pyfunc


        class Lookup(mlflow.pyfunc.PythonModel):
            def load_context(self, context):
                with open(context.artifacts["table"]) as handle:
                    self.table = json.load(handle)

            def predict(self, context, model_input, params=None):
                return [self.table.get(key, -1) for key in model_input["key"]]
    '''))
    table = scratch / "table.json"
    table.write_text(json.dumps({"a": 1, "b": 2, "c": 3}))
    sys.path.insert(0, str(scratch))
    import compat_lookup

    frame = pd.DataFrame({"key": ["a", "c", "zz"]})
    signature = infer_signature(frame, [1, 3, -1])
    mlflow.pyfunc.save_model(str(path), python_model=compat_lookup.Lookup(), artifacts={"table": str(table)},
                             code_paths=[str(code)], signature=signature, input_example=frame)
    _write(path, [*_frame_requests(frame), _request("bad: missing column", {"dataframe_records": [{"k": "a"}]})])


def pyfunc_tensor(path: Path) -> None:
    from mlflow.models import infer_signature

    data = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], dtype=np.float32)
    signature = infer_signature(data, TensorDouble().predict(None, data))
    mlflow.pyfunc.save_model(str(path), python_model=TensorDouble(), signature=signature, input_example=data)
    rows = data.tolist()
    _write(path, [
        _request("instances", {"instances": rows}),
        _request("inputs", {"inputs": rows}),
        _request("bad: wrong width", {"inputs": [[1.0, 2.0]]}),
        _request("bad: not numbers", {"inputs": [["a", "b", "c"]]}),
        *_bad_requests({"inputs": rows}),
    ])


def pyfunc_strings(path: Path) -> None:
    from mlflow.models import infer_signature

    frame = pd.DataFrame({"name": ["ada", "grace", "edsger"]})
    signature = infer_signature(frame, Greeter().predict(None, frame))
    mlflow.pyfunc.save_model(str(path), python_model=Greeter(), signature=signature, input_example=frame)
    _write(path, [*_frame_requests(frame), _request("bad: missing column", {"dataframe_records": [{"n": "x"}]})])


def pyfunc_no_signature(path: Path) -> None:
    mlflow.pyfunc.save_model(str(path), python_model=RowSums())
    frame = pd.DataFrame({"a": [1, 2], "b": [3.5, 4.0]})
    _write(path, [*_frame_requests(frame), _request("instances", {"instances": [[1, 2], [3, 4]]})])


# ---- library flavors -------------------------------------------------------------------


def _iris() -> tuple[pd.DataFrame, Any]:
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, y


def _sklearn(path: Path, serialization_format: str) -> None:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X, y = _iris()
    model = LogisticRegression(max_iter=1000).fit(X, y)
    mlflow.sklearn.save_model(model, str(path), serialization_format=serialization_format,
                              signature=infer_signature(X, model.predict(X)), input_example=X.head(3))
    sample = X.iloc[[0, 60, 120, 140]]
    _write(path, [*_frame_requests(sample),
                  _request("bad: missing column", {"dataframe_records": [{"sepal length (cm)": 1.0}]}),
                  _request("bad: text in a number column",
                           {"dataframe_split": {"columns": list(X.columns), "data": [["a", 1.0, 1.0, 1.0]]}})])


def sklearn_pickle(path: Path) -> None:
    _sklearn(path, "pickle")


def sklearn_cloudpickle(path: Path) -> None:
    _sklearn(path, "cloudpickle")


def sklearn_skops(path: Path) -> None:
    _sklearn(path, "skops")


def sklearn_pipeline_columns(path: Path) -> None:
    """A Pipeline whose ColumnTransformer one-hot encodes a string column and scales numbers."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "city": rng.choice(["oslo", "lima", "pune"], 200),
        "age": rng.integers(18, 80, 200).astype("int64"),
        "income": rng.normal(50, 15, 200).round(2),
    })
    target = ((frame["city"] == "oslo") ^ (frame["income"] > 50)).astype(int)
    model = Pipeline([
        ("columns", ColumnTransformer([
            ("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
            ("numbers", StandardScaler(), ["age", "income"]),
        ])),
        ("classify", LogisticRegression()),
    ]).fit(frame, target)
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(frame, model.predict(frame)),
                              input_example=frame.head(3))
    sample = pd.concat([frame.head(4), pd.DataFrame({"city": ["rome"], "age": [40], "income": [51.5]})])
    _write(path, [*_frame_requests(sample),
                  _request("bad: text in a number column",
                           {"dataframe_records": [{"city": "oslo", "age": "old", "income": 1.0}]}),
                  _request("bad: missing column", {"dataframe_records": [{"city": "oslo"}]})])


def xgboost_model(path: Path) -> None:
    import mlflow.xgboost
    import xgboost
    from mlflow.models import infer_signature

    X, y = _iris()
    model = xgboost.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1).fit(X, y)
    mlflow.xgboost.save_model(model, str(path), signature=infer_signature(X, model.predict(X)),
                              input_example=X.head(3))
    _write(path, [*_frame_requests(X.iloc[[0, 60, 120]]),
                  _request("bad: missing column", {"dataframe_records": [{"sepal length (cm)": 1.0}]})])


def lightgbm_model(path: Path) -> None:
    import lightgbm
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    X, y = _iris()
    model = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=7, n_jobs=1, verbose=-1).fit(X, y)
    mlflow.lightgbm.save_model(model, str(path), signature=infer_signature(X, model.predict(X)),
                               input_example=X.head(3))
    _write(path, [*_frame_requests(X.iloc[[0, 60, 120]]),
                  _request("bad: missing column", {"dataframe_records": [{"sepal length (cm)": 1.0}]})])


def statsmodels_model(path: Path) -> None:
    import mlflow.statsmodels
    import statsmodels.api as sm
    from mlflow.models import infer_signature

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"const": 1.0, "a": rng.normal(size=60), "b": rng.normal(size=60)})
    y = 2.0 * X["a"] - 0.5 * X["b"] + rng.normal(scale=0.1, size=60)
    results = sm.OLS(y, X).fit()
    mlflow.statsmodels.save_model(results, str(path), signature=infer_signature(X, results.predict(X)),
                                  input_example=X.head(3))
    _write(path, [*_frame_requests(X.head(4)),
                  _request("bad: missing column", {"dataframe_records": [{"a": 1.0}]})])


def onnx_model(path: Path) -> None:
    import mlflow.onnx
    from mlflow.models import infer_signature
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X, y = _iris()
    data = X.to_numpy(dtype=np.float32)
    model = LogisticRegression(max_iter=1000).fit(data, y)
    onnx_proto = to_onnx(model, data[:1], options={"zipmap": False}, target_opset=17)
    example = data[[0, 60, 120]]
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_proto.SerializeToString())
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"X": example})))
    mlflow.onnx.save_model(onnx_proto, str(path), signature=infer_signature({"X": example}, outputs),
                           input_example={"X": example})
    rows = example.tolist()
    _write(path, [
        _request("inputs", {"inputs": {"X": rows}}),
        _request("instances", {"instances": [{"X": row} for row in rows]}),
        _request("bad: wrong width", {"inputs": {"X": [[1.0, 2.0]]}}),
        *_bad_requests({"inputs": {"X": rows}}),
    ])


def keras_model(path: Path) -> None:
    """A small Keras 3 network on the JAX CPU backend (PyPI's torch and tensorflow wheels are
    far larger). Keras picks its backend when imported, from KERAS_BACKEND."""
    import os

    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    import mlflow.keras
    from mlflow.models import infer_signature

    keras.utils.set_random_seed(0)
    X, y = _iris()
    data = X.to_numpy(dtype=np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(data, y.to_numpy(), epochs=2, verbose=0)
    example = data[[0, 60, 120]]
    path.mkdir(parents=True)  # mlflow.keras writes the input example before it makes the directory
    mlflow.keras.save_model(model, str(path), signature=infer_signature(example, model.predict(example, verbose=0)),
                            input_example=example)
    rows = example.tolist()
    _write(path, [
        _request("inputs", {"inputs": rows}),
        _request("instances", {"instances": rows}),
        _request("bad: wrong width", {"inputs": [[1.0, 2.0]]}),
        *_bad_requests({"inputs": rows}),
    ])


MODELS: dict[str, Callable[..., None]] = {
    "pyfunc_plain": pyfunc_plain,
    "pyfunc_artifacts_code": pyfunc_artifacts_code,
    "pyfunc_tensor": pyfunc_tensor,
    "pyfunc_strings": pyfunc_strings,
    "pyfunc_no_signature": pyfunc_no_signature,
    "sklearn_pickle": sklearn_pickle,
    "sklearn_cloudpickle": sklearn_cloudpickle,
    "sklearn_skops": sklearn_skops,
    "sklearn_pipeline_columns": sklearn_pipeline_columns,
    "xgboost": xgboost_model,
    "lightgbm": lightgbm_model,
    "statsmodels": statsmodels_model,
    "onnx": onnx_model,
    "keras": keras_model,
}


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    names = argv[1:] or list(MODELS)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = out / name
        if (path / "compat_requests.json").is_file():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow's advice on type hints and example inference
            if name == "pyfunc_artifacts_code":
                pyfunc_artifacts_code(path, out / "_scratch")
            else:
                MODELS[name](path)
        print(f"saved {name}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
