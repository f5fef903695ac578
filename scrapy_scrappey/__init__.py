"""Scrapy integration for the Scrappey web-scraping API."""

from __future__ import annotations

from .addon import Addon
from .budget import BudgetExhausted
from .config import Config
from .exceptions import (
    ScrappeyAPIError,
    ScrappeyAPIUnreachable,
    ScrappeyAuthError,
    ScrappeyConfigError,
    ScrappeyError,
    ScrappeyTransportError,
    SessionCheckFailed,
    SessionsUnavailable,
    SessionWaitTimeout,
)
from .fingerprint import RequestFingerprinter
from .item_metadata import ScrappeyItemMetadata
from .middleware import ScrappeyMiddleware
from .responses import (
    ScrappeyHtmlResponse,
    ScrappeyJsonResponse,
    ScrappeyResponse,
    ScrappeyTextResponse,
    ScrappeyXmlResponse,
)

__version__ = "0.1.0"

__all__ = [
    "Addon",
    "BudgetExhausted",
    "Config",
    "RequestFingerprinter",
    "ScrappeyAPIError",
    "ScrappeyAPIUnreachable",
    "ScrappeyAuthError",
    "ScrappeyConfigError",
    "ScrappeyError",
    "ScrappeyHtmlResponse",
    "ScrappeyItemMetadata",
    "ScrappeyJsonResponse",
    "ScrappeyMiddleware",
    "ScrappeyResponse",
    "ScrappeyTextResponse",
    "ScrappeyTransportError",
    "ScrappeyXmlResponse",
    "SessionCheckFailed",
    "SessionWaitTimeout",
    "SessionsUnavailable",
]
