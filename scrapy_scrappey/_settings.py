"""Reading one setting's value: typed, validated, errors naming the setting.

The building blocks of :meth:`scrapy_scrappey.config.Config.from_settings`;
each raises :class:`~scrapy_scrappey.exceptions.ScrappeyConfigError` whose
message names the setting (or *label*, for a value inside one) and quotes the
wrong value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .exceptions import ScrappeyConfigError

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

_V = TypeVar("_V")


def read_bool(settings: BaseSettings, name: str, default: bool) -> bool:
    try:
        return settings.getbool(name, default)
    except ValueError as ex:
        raise ScrappeyConfigError(
            f"{name} must be a boolean, got {settings.get(name)!r}."
        ) from ex


def read_int(
    values: Mapping[str, Any],
    name: str,
    default: int,
    *,
    minimum: int,
    label: str | None = None,
) -> int:
    raw = values.get(name, default)
    label = label or name
    try:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise TypeError
        value = int(raw)
    except (TypeError, ValueError) as ex:
        raise ScrappeyConfigError(f"{label} must be an integer, got {raw!r}.") from ex
    if value < minimum:
        raise ScrappeyConfigError(f"{label} must be at least {minimum}, got {value}.")
    return value


def read_float(
    values: Mapping[str, Any],
    name: str,
    default: float,
    *,
    allow_zero: bool = False,
    label: str | None = None,
    unit: str = " seconds",
) -> float:
    raw = values.get(name, default)
    label = label or name
    try:
        if isinstance(raw, bool):
            raise TypeError
        value = float(raw)
    except (TypeError, ValueError) as ex:
        raise ScrappeyConfigError(
            f"{label} must be a number{' of' + unit if unit else ''}, got {raw!r}."
        ) from ex
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise ScrappeyConfigError(f"{label} must be {bound}{unit}, got {raw!r}.")
    return value


def read_dict(settings: BaseSettings, name: str) -> dict[str, Any]:
    raw = settings.get(name)
    if raw is not None and not isinstance(raw, (str, Mapping)):
        raise ScrappeyConfigError(f"{name} must be a dict, got {raw!r}.")
    try:
        value = settings.getdict(name)
    except (TypeError, ValueError) as ex:  # not JSON, or JSON but not an object
        raise ScrappeyConfigError(
            f"{name} must be a dict (or a JSON object string), got {raw!r}."
        ) from ex
    return require_json(value, name)


def require_json(value: _V, label: str) -> _V:
    """*value*, once it is known to be JSON-serialisable (API parameters are sent as JSON)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as ex:
        raise ScrappeyConfigError(f"{label} must hold JSON values only: {ex}.") from ex
    return value
