"""Choosing the fetch engine: ``http``, ``browser`` or ``auto``.

``auto`` takes the browser engine when Playwright is importable and Chromium
launches, and the http engine otherwise, saying which and why in one log
line. ``browser`` fails the start with the reason instead. Chromium is found
as ``chromium=`` (``--chromium``), else ``$SCRAPPEY_LOCAL_CHROMIUM``, else the
first of :data:`CHROMIUM_NAMES` on ``PATH``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from scrapy_scrappey.local.browser import BrowserEngine
    from scrapy_scrappey.local.sessions import LocalSession

logger = logging.getLogger(__name__)

EngineMode = Literal["http", "browser", "auto"]
ENGINE_MODES: tuple[str, ...] = ("http", "browser", "auto")
CHROMIUM_ENV = "SCRAPPEY_LOCAL_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
INSTALL_HINT = (
    "pip install 'scrapy-scrappey[browser]' and apt-get install chromium "
    "(or pass --chromium PATH)"
)


PLAYWRIGHT_MISSING = "the playwright package is not installed"


class EngineUnavailable(RuntimeError):
    """The browser engine was asked for and cannot run here."""


def find_chromium(chromium: str | None = None) -> str:
    """The Chromium executable to launch (``EngineUnavailable`` if none)."""
    given = chromium or os.environ.get(CHROMIUM_ENV)
    if given:
        found = shutil.which(given) or (given if Path(given).is_file() else None)
        if found is None:
            raise EngineUnavailable(f"Chromium not found at {given!r}")
        return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise EngineUnavailable(f"no Chromium on PATH ({', '.join(CHROMIUM_NAMES)})")


def missing_browser(chromium: str | None = None) -> str | None:
    """Why the browser engine cannot run here (without launching), or ``None``."""
    try:
        find_chromium(chromium)
    except EngineUnavailable as exc:
        return str(exc)
    if importlib.util.find_spec("playwright") is None:
        return PLAYWRIGHT_MISSING
    return None


async def start_browser_engine(
    mode: EngineMode,
    chromium: str | None,
    on_lost: Callable[[LocalSession], Awaitable[None]],
    extra_args: tuple[str, ...] = (),
) -> BrowserEngine | None:
    """A launched browser engine, or ``None`` when *mode* settles on http.

    *extra_args*: Chromium switches beyond the defaults.
    """
    if mode == "http":
        return None
    try:
        engine = await _launch(chromium, on_lost, extra_args)
    except EngineUnavailable as exc:
        if mode == "browser":
            raise
        logger.info(
            "Engine: http (browser engine unavailable: %s; %s)", exc, INSTALL_HINT
        )
        return None
    logger.info("Engine: browser (Chromium %s, %s)", engine.version, engine.executable)
    return engine


async def _launch(
    chromium: str | None,
    on_lost: Callable[[LocalSession], Awaitable[None]],
    extra_args: tuple[str, ...],
) -> BrowserEngine:
    missing = missing_browser(chromium)
    if missing is not None:
        raise EngineUnavailable(missing)
    executable = find_chromium(chromium)
    # Imported only now: the http engine must work without Playwright.
    from playwright.async_api import Error as PlaywrightError

    from scrapy_scrappey.local.browser import BrowserEngine

    engine = BrowserEngine(executable, on_lost=on_lost, extra_args=extra_args)
    try:
        await engine.start()
    except PlaywrightError as exc:
        await engine.close()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise EngineUnavailable(
            f"Chromium {executable} does not launch: {first}"
        ) from exc
    return engine
