"""Strict JSON for the files atcon writes."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from atcon._json import to_json


def strict_loads(text: str) -> Any:
    """``json.loads`` that refuses NaN and Infinity, as JSON readers outside Python do."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_everywhere() -> None:
    obj = {
        "a": math.nan,
        "b": [1.5, math.inf, (-math.inf, 2)],
        "c": {"d": np.float64("nan"), "e": np.float32(0.25).item(), "f": "nan"},
        "g": None,
        "h": True,
        "i": 3,
    }
    back = strict_loads(to_json(obj))
    assert back == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": None, "e": 0.25, "f": "nan"},
                    "g": None, "h": True, "i": 3}  # fmt: skip
    assert strict_loads(to_json([math.nan], indent=None)) == [None]
    assert to_json({"x": 1}, indent=None) == json.dumps({"x": 1})


def test_default_results_are_converted_and_unknown_types_fail() -> None:
    class Odd:
        pass

    assert strict_loads(to_json({"p": Odd()}, default=lambda o: math.nan)) == {"p": None}
    with pytest.raises(TypeError, match="Odd is not JSON serializable"):
        to_json({"p": Odd()})
