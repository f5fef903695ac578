"""Reading ``SCRAPPEY_BAN_DETECTORS`` (and the spider attribute) for config.py."""

from __future__ import annotations

import json

from scrapy.utils.misc import load_object

from ..exceptions import ScrappeyConfigError
from ._detectors import BUILTIN_DETECTORS, Detector


def read_detectors(value: object, where: str) -> tuple[tuple[str, Detector], ...]:
    """``SCRAPPEY_BAN_DETECTORS``: built-in names and/or import paths (or callables).

    None: every built-in detector; ``[]`` or ``""``: none. A comma-separated
    or JSON list string is accepted (from ``-s``).
    """
    if value is None:
        return tuple(BUILTIN_DETECTORS.items())
    if isinstance(value, str):
        value = _string_list(value, where)
    if not isinstance(value, (list, tuple)):
        raise ScrappeyConfigError(
            f"{where} must be a list of built-in detector names and/or import "
            f"paths of callables, got {value!r:.100}."
        )
    detectors: dict[str, Detector] = {}
    bad: list[str] = []
    for item in value:
        found = _detector(item)
        if isinstance(found, str):
            bad.append(found)
        else:
            detectors.setdefault(*found)
    if bad:
        raise ScrappeyConfigError(
            f"{where}: {'; '.join(bad)}. Built-in detectors: "
            f"{', '.join(BUILTIN_DETECTORS)}; or give the import path of a "
            f"callable (response) -> str | None."
        )
    return tuple(detectors.items())


def _string_list(value: str, where: str) -> object:
    if value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError as ex:
            raise ScrappeyConfigError(f"{where} is not valid JSON: {ex}.") from ex
    return [v.strip() for v in value.split(",") if v.strip()]


def _detector(item: object) -> tuple[str, Detector] | str:
    """(name, detector), or what is wrong with *item*."""
    if callable(item) and not isinstance(item, type):
        return getattr(item, "__qualname__", repr(item)), item
    if not isinstance(item, str) or not item:
        return f"{item!r:.60} is neither a detector name nor an import path"
    if item in BUILTIN_DETECTORS:
        return item, BUILTIN_DETECTORS[item]
    if "." not in item:
        return f"unknown detector {item!r:.60}"
    try:
        obj = load_object(item)
    except (ImportError, NameError, ValueError, AttributeError) as ex:
        return f"{item!r:.100} could not be imported ({ex})"
    if not callable(obj) or isinstance(obj, type):
        return f"{item!r:.100} is {obj!r:.60}, not a callable (response) -> str | None"
    return item, obj
