"""The most basic MLflow model, saved by mlflow itself: a custom pyfunc, `python_model=MyModel()`.

Its requirements are what MLflow writes for it (`mlflow==X`, `cloudpickle==Y`) and nothing
pulls scikit-learn into its environment: the model that found the mlflow-skinny rule dropping
numpy and pandas (issue 10). Shared by the local, docker and SageMaker skinny regression tests.
"""

from __future__ import annotations

import json
import sys
import textwrap
import warnings
from importlib import metadata
from pathlib import Path

# A user's script defines the class in __main__, so cloudpickle stores it by value; the test
# module is registered by value for the same effect.
_SOURCE = textwrap.dedent("""
    import mlflow.pyfunc

    class Scaler(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input * (params or {}).get("factor", 2)
""")

#: A request and what the model answers to it (`factor` is a param with default 2).
REQUEST = {"dataframe_split": {"columns": ["x"], "data": [[1.5], [-2.0]]}, "params": {"factor": 3}}
ANSWER = {"predictions": [{"x": 4.5}, {"x": -6.0}]}


def save_plain_pyfunc(path: Path) -> Path:
    """Save the plain pyfunc model at `path` with mlflow; returns `path`."""
    import cloudpickle
    import pandas as pd

    module_dir = path.parent / f"{path.name}-src"
    module_dir.mkdir(parents=True, exist_ok=True)
    (module_dir / "plain_scaler.py").write_text(_SOURCE)
    sys.path.insert(0, str(module_dir))
    try:
        with warnings.catch_warnings():  # MLflow's advice on pickles and type hints, irrelevant here
            warnings.simplefilter("ignore")
            import mlflow.pyfunc
            import plain_scaler
            from mlflow.models import infer_signature

            cloudpickle.register_pickle_by_value(plain_scaler)
            frame = pd.DataFrame({"x": [1.0, 2.0]})
            signature = infer_signature(frame, frame * 2, params={"factor": 2})
            # Exactly the two lines mlflow infers for this model (inference takes ~30 s more).
            mlflow.pyfunc.save_model(
                str(path), python_model=plain_scaler.Scaler(), signature=signature, input_example=frame,
                pip_requirements=[f"mlflow=={metadata.version('mlflow')}",
                                  f"cloudpickle=={metadata.version('cloudpickle')}"],
            )
            cloudpickle.unregister_pickle_by_value(plain_scaler)
    finally:
        sys.path.remove(str(module_dir))
        sys.modules.pop("plain_scaler", None)
    (path / "request.json").write_text(json.dumps(REQUEST))
    return path
