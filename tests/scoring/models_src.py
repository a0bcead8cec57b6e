"""Model code the test models carry in their ``code/`` directory (copied there by the
fixtures in ``conftest.py``); importing this file needs mlflow, pandas and numpy only."""

import time

import mlflow.pyfunc
import numpy as np
import pandas as pd


class Custom(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Columns x (double), n (long), label (string), flag (boolean); params scale, sleep,
    fail. Answers a DataFrame so serialisation of mixed columns is exercised.

    predict's type hints are ones MLflow takes as "no signature from hints" (any other,
    or none, makes it warn; warnings are errors here). This file has no
    ``from __future__ import annotations``: MLflow needs the hints as real types.
    """

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # type: ignore[no-untyped-def]
        params = params or {}
        if params.get("sleep"):
            time.sleep(float(params["sleep"]))
        if params.get("fail"):
            raise RuntimeError("asked to fail")
        scale = float(params.get("scale", 1.0))
        return pd.DataFrame(
            {
                "y": model_input["x"] * scale + model_input["n"],
                "label": model_input["label"].str.upper(),
                "flag": ~model_input["flag"],
                "n_type": [type(v).__name__ for v in model_input["n"].tolist()],
            }
        )


class TensorSum(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """One unnamed float32 tensor of shape (-1, 4): the sum of each row, and NaN for rows
    whose first value is negative (to check NaN becomes null)."""

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:  # type: ignore[no-untyped-def]
        assert isinstance(model_input, np.ndarray) and model_input.dtype == np.float32
        out = model_input.sum(axis=1).astype(np.float64)
        out[model_input[:, 0] < 0] = np.nan
        return out


class NamedTensors(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Named tensors a (float64, (-1, 2)) and b (int64, (-1,)): a[:, 0] * b + a[:, 1].

    The input is really a dict of arrays; the DataFrame hint only keeps MLflow quiet."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:  # type: ignore[no-untyped-def]
        a, b = model_input["a"], model_input["b"]
        assert a.dtype == np.float64 and b.dtype == np.int64
        return a[:, 0] * b + a[:, 1]
