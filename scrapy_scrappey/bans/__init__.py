"""Built-in ban detectors: recognise anti-bot block and challenge pages.

A ban detector is any callable ``(response) -> str | None`` that returns the
name of the vendor whose block or challenge page *response* is, or None.
``SCRAPPEY_BAN_DETECTORS`` lists the ones a crawl runs (default: every
built-in one, see :data:`BUILTIN_DETECTORS`); they run first in the session
check, and a detection retires the session and retries the request.
"""

from __future__ import annotations

from ._config import read_detectors
from ._detectors import BUILTIN_DETECTORS, BuiltinDetector, Detector, detect
from ._page import Page

__all__ = [
    "BUILTIN_DETECTORS",
    "BuiltinDetector",
    "Detector",
    "Page",
    "detect",
    "read_detectors",
]
