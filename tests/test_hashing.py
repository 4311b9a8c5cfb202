"""config_hash: canonical, stable across processes, clear about what it cannot hash."""

from __future__ import annotations

import dataclasses
import enum
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from tracking_tasks import config_hash
from tracking_tasks.errors import ConfigHashError
from tracking_tasks.hashing import canonical_json


class Opt(enum.Enum):
    ADAM = "adam"


class Model(BaseModel):
    lr: float
    layers: list[int]


@dataclasses.dataclass
class DC:
    lr: float
    layers: list[int]


CONFIG = {"lr": 0.1, "layers": [2, 3], "opt": "adam", "nested": {"b": 1, "a": None}}


def test_full_and_short_forms() -> None:
    full = config_hash(CONFIG)
    assert len(full) == 64 and int(full, 16) >= 0
    assert config_hash(CONFIG, short=True) == full[:12]


def test_key_order_does_not_matter() -> None:
    reordered = {"nested": {"a": None, "b": 1}, "opt": "adam", "layers": [2, 3], "lr": 0.1}
    assert config_hash(reordered) == config_hash(CONFIG)


def test_list_order_matters_and_values_matter() -> None:
    assert config_hash({**CONFIG, "layers": [3, 2]}) != config_hash(CONFIG)
    assert config_hash({**CONFIG, "lr": 0.10000001}) != config_hash(CONFIG)


def test_floats_are_normalised() -> None:
    assert config_hash({"x": 1.0}) == config_hash({"x": 1})
    assert config_hash({"x": -0.0}) == config_hash({"x": 0})
    assert canonical_json({"x": 0.1 + 0.2}) == '{"x":0.30000000000000004}'
    assert config_hash({"x": float("nan")}) == config_hash({"x": float("nan")})
    assert config_hash({"x": float("inf")}) != config_hash({"x": float("-inf")})
    assert config_hash({"x": float("nan")}) != config_hash({"x": "nan"})


def test_canonical_json_has_no_whitespace_and_sorted_keys() -> None:
    text = canonical_json({"b": [1, 2], "a": {"d": 1.5, "c": True}})
    assert text == '{"a":{"c":true,"d":1.5},"b":[1,2]}'
    assert json.loads(text) == {"a": {"c": True, "d": 1.5}, "b": [1, 2]}


def test_pydantic_dataclass_and_dict_agree() -> None:
    as_dict = {"lr": 0.1, "layers": [2]}
    assert config_hash(Model(lr=0.1, layers=[2])) == config_hash(as_dict)
    assert config_hash(DC(lr=0.1, layers=[2])) == config_hash(as_dict)


def test_other_plain_types() -> None:
    assert config_hash({"opt": Opt.ADAM}) == config_hash({"opt": "adam"})
    assert config_hash({"p": Path("/data/x")}) == config_hash({"p": "/data/x"})
    assert config_hash({"s": {3, 1, 2}}) == config_hash({"s": {2, 3, 1}})
    assert config_hash({"t": (1, 2)}) == config_hash({"t": [1, 2]})


@pytest.mark.parametrize(
    "bad",
    [
        {"fn": lambda x: x},
        {"nested": {"sock": "placeholder"}},
        {"obj": object()},
    ],
)
def test_unhashable_values_raise_type_error_naming_the_place(bad: dict) -> None:
    if "nested" in bad:
        sock = socket.socket()
        bad = {"nested": {"sock": sock}}
    try:
        with pytest.raises(ConfigHashError) as info:
            config_hash(bad)
    finally:
        if "nested" in bad:
            bad["nested"]["sock"].close()
    assert isinstance(info.value, TypeError)
    assert "config[" in str(info.value)
    assert "plain data" in str(info.value)


def test_identical_across_processes_and_hash_seeds() -> None:
    code = (
        "from tracking_tasks import config_hash;"
        "print(config_hash({'opt': 'adam', 'lr': 0.1, 'layers': [2, 3],"
        " 'nested': {'a': None, 'b': 1}, 'tags': {'x', 'y', 'z'}}))"
    )
    here = config_hash({**CONFIG, "tags": {"z", "y", "x"}})
    outputs = set()
    for seed in ("0", "1", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.add(out.stdout.strip())
    assert outputs == {here}
