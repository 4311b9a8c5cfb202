"""The converted digits model as an MLflow pyfunc model, from code (no pickle).

``log_model`` stores this file with the model (MLflow's "models from code"): loading it
runs the file, whose last line hands MLflow the model. The weights are the conversion's
``linear_model.json``, stored as the model's ``linear_model`` artifact. It needs numpy
only, so ``mlflow models serve`` runs it anywhere MLflow does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class LinearJsonModel(PythonModel):  # type: ignore[misc]
    """Predicts ``classes[argmax(x @ coef.T + intercept)]`` from the JSON linear model."""

    def load_context(self, context: Any) -> None:
        spec = json.loads(Path(context.artifacts["linear_model"]).read_text())
        self.coef = np.asarray(spec["coef"], dtype=float)
        self.intercept = np.asarray(spec["intercept"], dtype=float)
        self.classes = np.asarray(spec["classes"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # no type hints here: MLflow would read them as the model's input schema
        x = np.asarray(model_input, dtype=float)
        return self.classes[np.argmax(x @ self.coef.T + self.intercept, axis=1)]


mlflow.models.set_model(LinearJsonModel())
