"""config_hash(): a canonical, stable, short identity for a configuration."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import json
import math
import numbers
import uuid
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel

from tracking_tasks.errors import ConfigHashError

__all__ = ["SHORT_HASH_LENGTH", "canonical_json", "config_hash"]

SHORT_HASH_LENGTH = 12
_MAX_EXACT_INT_FLOAT = 2**53


def _canon_float(value: float) -> Any:
    if math.isnan(value):
        return {"$float": "nan"}
    if math.isinf(value):
        return {"$float": "inf" if value > 0 else "-inf"}
    if value.is_integer() and abs(value) <= _MAX_EXACT_INT_FLOAT:
        return int(value)  # 1.0 and 1 are the same setting; -0.0 becomes 0
    return float(repr(value))  # shortest round-trip form, identical in every process


def _canon(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return _canon(value.value, where)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _canon_float(float(value))
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, BaseModel):
        return _canon(value.model_dump(mode="python"), where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _canon(fields, where)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[_canon_key(key, where)] = _canon(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_canon(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [_canon(item, f"{where}{{...}}") for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return {"$bytes": bytes(value).hex()}
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, without importing numpy
    if callable(tolist):
        return _canon(tolist(), where)
    raise ConfigHashError(
        f"config_hash cannot represent {where} of type {type(value).__name__} ({value!r:.60}). "
        "A config must hold plain data (str, numbers, bool, None, lists, dicts, pydantic "
        "models, dataclasses, enums, paths, dates): pass a name or a value instead."
    )


def _canon_key(key: Any, where: str) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | numbers.Real | enum.Enum):
        return json.dumps(_canon(key, where), sort_keys=True)
    raise ConfigHashError(
        f"config_hash cannot use {key!r} (a {type(key).__name__}) as a key in {where}: "
        "use strings or numbers as keys"
    )


def canonical_json(obj: Any) -> str:
    """Return the canonical JSON text that :func:`config_hash` hashes.

    Keys are sorted, there is no whitespace, integral floats are written as integers,
    other floats in their shortest round-trip form, NaN and infinities as tagged
    objects, sets sorted.

    Args:
        obj: A mapping, pydantic model, dataclass or other plain data.

    Returns:
        The canonical JSON string.

    Raises:
        ConfigHashError: a value cannot be represented (a function, a socket...).

    Example:
        >>> canonical_json({"b": 1.0, "a": [0.1, None]})
        '{"a":[0.1,null],"b":1}'
    """
    return json.dumps(
        _canon(obj, "config"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def config_hash(obj: Any, *, short: bool = False) -> str:
    """Hash a configuration: sha256 of its canonical JSON.

    The same config gives the same hash in every process, whatever the key order or
    ``PYTHONHASHSEED``; ``1`` and ``1.0`` are the same setting.

    Args:
        obj: A mapping, pydantic model, dataclass or other plain data.
        short: Return the first 12 hex digits instead of all 64.

    Returns:
        The hex digest (64 characters, or 12 with ``short=True``).

    Raises:
        ConfigHashError: a value cannot be represented (a ``TypeError``).

    Example:
        >>> config_hash({"lr": 0.1, "layers": 2}, short=True) == config_hash(
        ...     {"layers": 2, "lr": 0.1})[:12]
        True
    """
    digest = hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
    return digest[:SHORT_HASH_LENGTH] if short else digest
