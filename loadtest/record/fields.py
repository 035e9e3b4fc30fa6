"""Numbers read from a JSON run record, with errors that name the field."""

from __future__ import annotations

from typing import Any

from distil.errors import LoadTestError


def number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LoadTestError(f"{name} must be a number, got {value!r}.")
    try:
        return float(value)
    except ValueError as exc:
        raise LoadTestError(f"{name} must be a number, got {value!r}.") from exc


def optional_number(value: Any, name: str) -> float | None:
    return None if value is None else number(value, name)
