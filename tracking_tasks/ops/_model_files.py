"""A model's files: which MLflow flavour saves it, saving it locally (no requirement
inference, no uv files), and stamping the logged model's ids into its ``MLmodel``."""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from tracking_tasks.errors import InvalidArgumentError, LoggedModelError, mlflow_errors

if TYPE_CHECKING:
    from mlflow.entities import LoggedModel

#: A model's top-level package -> the MLflow flavour that saves it (``flavor=`` for others).
FLAVORS = {
    "sklearn": "sklearn",
    "torch": "pytorch",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "catboost": "catboost",
    "keras": "keras",
    "tensorflow": "tensorflow",
    "transformers": "transformers",
    "sentence_transformers": "sentence_transformers",
    "statsmodels": "statsmodels",
    "prophet": "prophet",
    "onnx": "onnx",
    "spacy": "spacy",
}
#: ``pip_requirements="infer"``: let MLflow infer them (a subprocess that imports the model).
INFER = "infer"

Requirements = Sequence[str] | Literal["infer"] | None


def _saved_folder(model: Any) -> Path | None:
    """The folder of an already saved MLflow model (it holds an ``MLmodel`` file), else None."""
    if not isinstance(model, str | os.PathLike):
        return None
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "MLmodel").is_file():
            raise InvalidArgumentError(
                f"{str(path)!r} is a folder without an MLmodel file: pass a model saved with "
                "mlflow.<flavor>.save_model, a model object, or a pyfunc model's .py file"
            )
        return path
    if not path.is_file():
        raise InvalidArgumentError(f"model path {str(path)!r} does not exist")
    return None


def resolve_flavor(model: Any, flavor: str | ModuleType | None) -> ModuleType | None:
    """The MLflow flavour module that saves ``model`` (None: an already saved folder).

    Args:
        model: A model object, a pyfunc ``PythonModel`` (or its ``.py`` file), or the
            folder of an already saved MLflow model.
        flavor: A flavour module (``mlflow.sklearn``) or name (``"sklearn"``), or None to
            tell it from the model.

    Returns:
        The flavour's module, or None for a saved folder.

    Raises:
        InvalidArgumentError: the flavour is unknown or cannot be told.

    Example:
        >>> from sklearn.linear_model import LogisticRegression
        >>> resolve_flavor(LogisticRegression(), None).__name__
        'mlflow.sklearn'
    """
    if _saved_folder(model) is not None:
        if flavor is not None:
            raise InvalidArgumentError(
                "a saved MLflow model folder is logged as it is: drop flavor="
            )
        return None
    if isinstance(flavor, ModuleType):
        chosen = flavor
    else:
        if flavor is None:
            flavor = _guess_flavor(model)
        if not isinstance(flavor, str) or not flavor.isidentifier():
            raise InvalidArgumentError(f"flavor must be an MLflow flavour name, not {flavor!r}")
        try:
            chosen = importlib.import_module(f"mlflow.{flavor}")
        except ImportError as exc:
            raise InvalidArgumentError(
                f"mlflow.{flavor} cannot be imported ({exc}): name an MLflow flavour "
                "(sklearn, pytorch, pyfunc, ...) and install what it needs"
            ) from exc
    if not callable(getattr(chosen, "save_model", None)):
        raise InvalidArgumentError(f"{chosen.__name__} is not an MLflow flavour (no save_model)")
    return chosen


def _guess_flavor(model: Any) -> str:
    from mlflow.pyfunc.model import PythonModel

    if isinstance(model, PythonModel) or (
        isinstance(model, str | os.PathLike) and str(model).endswith(".py")
    ):
        return "pyfunc"
    package = type(model).__module__.split(".")[0]
    if package in FLAVORS:
        return FLAVORS[package]
    raise InvalidArgumentError(
        f"cannot tell which MLflow flavour saves a {type(model).__module__}."
        f"{type(model).__qualname__}: pass flavor= (e.g. flavor='sklearn' or "
        "flavor=mlflow.pytorch), or a pyfunc PythonModel"
    )


def _requirements(
    flavor: ModuleType, requirements: Requirements, extra: Sequence[str] | None, kwargs: Any
) -> list[str] | None:
    """What ``pip_requirements`` to hand ``save_model``: None lets MLflow infer them."""
    if requirements == INFER:
        return None
    if requirements is not None:
        if isinstance(requirements, str):
            raise InvalidArgumentError(
                "pip_requirements must be a list of requirement strings, 'infer', or None"
            )
        return [*map(str, requirements), *(extra or [])]
    defaults = getattr(flavor, "get_default_pip_requirements", None)
    if defaults is None:
        return None  # a flavour without defaults: MLflow infers them
    accepted = inspect.signature(defaults).parameters
    fmt = kwargs.get("serialization_format")
    options = {
        "include_skops": fmt == "skops",
        "include_cloudpickle": fmt == "cloudpickle",
    }
    chosen = {k: v for k, v in options.items() if k in accepted}
    return [*defaults(**chosen), *(extra or [])]


def save_model_locally(
    model: Any,
    flavor: ModuleType | None,
    folder: Path,
    *,
    input_example: Any = None,
    signature: Any = None,
    pip_requirements: Requirements = None,
    extra_pip_requirements: Sequence[str] | None = None,
    save_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as an MLflow model folder at ``folder`` (which must not exist).

    A saved folder is copied as it is. Otherwise the flavour's ``save_model`` writes it,
    with the signature inferred from ``input_example`` (unless given), the flavour's
    default requirements (no inference subprocess unless ``pip_requirements="infer"``)
    and no uv project files copied from the working directory.

    Returns:
        ``folder``.
    """
    saved = _saved_folder(model)
    if saved is not None:
        shutil.copytree(saved, folder)
        return folder
    assert flavor is not None
    kwargs: dict[str, Any] = dict(save_kwargs or {})
    if flavor.__name__ == "mlflow.sklearn":
        # MLflow's default outside Databricks, chosen here so nothing reads the global URI
        kwargs.setdefault("serialization_format", "skops")
    if input_example is not None:
        kwargs["input_example"] = input_example
    if signature is not None:
        kwargs["signature"] = signature
    if "pip_requirements" not in kwargs and "conda_env" not in kwargs:
        chosen = _requirements(flavor, pip_requirements, extra_pip_requirements, kwargs)
        if chosen is not None:
            kwargs["pip_requirements"] = chosen
        elif extra_pip_requirements:
            kwargs["extra_pip_requirements"] = list(extra_pip_requirements)
    accepted = inspect.signature(flavor.save_model).parameters
    if "uv_project_path" in accepted and "uv_project_path" not in kwargs:
        # pyfunc copies uv.lock and pyproject.toml of the working directory into the model
        # unless told where the project is: point it at an empty folder
        no_project = folder.parent / "no-uv-project"
        no_project.mkdir(exist_ok=True)
        kwargs["uv_project_path"] = str(no_project)
    with mlflow_errors(
        f"could not save the model with {flavor.__name__}", default=LoggedModelError
    ):
        if flavor.__name__ == "mlflow.pyfunc":
            python_model = str(model) if isinstance(model, os.PathLike) else model
            flavor.save_model(path=str(folder), python_model=python_model, **kwargs)
        else:
            flavor.save_model(model, path=str(folder), **kwargs)
    for cache in folder.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return folder


def stamp_model_folder(folder: Path, logged: LoggedModel, run_id: str) -> None:
    """Write the logged model's ids into the folder's ``MLmodel``, as ``Model.log`` does.

    ``mlflow.pyfunc.load_model`` reads ``model_id`` from it, so predictions and traces
    stay linked to the logged model.
    """
    from mlflow.models import Model

    mlmodel = Model.load(str(folder))
    mlmodel.artifact_path = logged.artifact_location
    mlmodel.model_uuid = logged.model_id
    mlmodel.run_id = run_id
    mlmodel.model_id = logged.model_id
    mlmodel.save(str(folder / "MLmodel"))
