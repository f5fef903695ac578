"""The built-in detectors as callables, and the type of any ban detector."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scrapy.http import Response

from ._page import Page
from .vendors import RULES

#: A ban detector: returns the vendor's name for its block page, else None.
Detector = Callable[[Response], "str | None"]


@dataclass(frozen=True)
class BuiltinDetector:
    """One vendor's rule, callable like any detector.

    :meth:`on_page` lets several built-in detectors share one :class:`Page`
    (headers, the lower-cased body prefix) instead of each reading the body.
    """

    name: str
    rule: Callable[[Page], bool]

    def __call__(self, response: Response) -> str | None:
        return self.on_page(Page(response))

    def on_page(self, page: Page) -> str | None:
        """The vendor's name when *page* is its block or challenge page."""
        return self.name if self.rule(page) else None


#: Every built-in detector by name (``SCRAPPEY_BAN_DETECTORS`` names).
BUILTIN_DETECTORS = {name: BuiltinDetector(name, rule) for name, rule in RULES.items()}


def detect(response: Response) -> str | None:
    """Run every built-in detector on *response*; the first vendor found, or None."""
    page = Page(response)
    for detector in BUILTIN_DETECTORS.values():
        vendor = detector.on_page(page)
        if vendor is not None:
            return vendor
    return None
