"""``python -m scoring predict`` writes only the answer to stdout, whatever the model prints."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SAVE = textwrap.dedent('''
    import sys

    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature


    class Chatty(mlflow.pyfunc.PythonModel):
        """Prints while it predicts, as Keras' progress bar does (to stdout)."""

        def predict(self, context, model_input, params=None):
            print("1/1 [==============================] - 0s")
            return [len(model_input)]


    frame = pd.DataFrame({"x": [1.0, 2.0]})
    mlflow.pyfunc.save_model(sys.argv[1], python_model=Chatty(), signature=infer_signature(frame, [2]),
                             pip_requirements=["mlflow"])
''')


def test_what_the_model_prints_goes_to_stderr(tmp_path: Path) -> None:
    model = tmp_path / "model"
    subprocess.run([sys.executable, "-c", SAVE, str(model)], check=True, capture_output=True, timeout=300)
    given = tmp_path / "input.json"
    given.write_text(json.dumps({"dataframe_records": [{"x": 1.0}, {"x": 2.0}]}))
    result = subprocess.run([sys.executable, "-m", "scoring", "predict", str(model), "-i", str(given)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"predictions": [2]}
    assert "1/1 [====" in result.stderr
