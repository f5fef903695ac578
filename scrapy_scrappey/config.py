"""All of the plugin's settings, read once into a typed :class:`Config`."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from .exceptions import ScrappeyConfigError

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.settings import BaseSettings

    # typing.Self requires Python 3.11
    from typing_extensions import Self

DEFAULT_API_URL = "https://publisher.scrappey.com/api/v1"
SCOPES = ("spider", "domain", "none")
Scope = Literal["spider", "domain", "none"]


@dataclass(frozen=True)
class Config:
    """The plugin's configuration. Build it with :meth:`from_settings`."""

    api_key: str
    api_url: str = DEFAULT_API_URL
    transparent: bool = True
    default_params: dict[str, Any] | None = None
    session_scope: Scope = "spider"
    session_params: dict[str, Any] | None = None
    pool_size: int = 1
    session_concurrency: int = 1
    session_max_requests: int = 0
    session_idle_ttl: float = 150.0
    max_sessions: int = 0
    #: Seconds a request may wait for a free session; 0: as long as the spider is open.
    session_wait_timeout: float = 0.0
    create_attempts: int = 5
    create_backoff: float = 1.0
    create_backoff_max: float = 30.0
    api_concurrency: int = 64
    control_timeout: float = 30.0
    close_timeout: float = 30.0
    request_timeout: float = 180.0
    ledger_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Self:
        """Read and validate every ``SCRAPPEY_*`` setting.

        Raises :class:`ScrappeyConfigError` naming the culprit setting.
        """
        key = settings.get("SCRAPPEY_API_KEY") or os.environ.get("SCRAPPEY_API_KEY", "")
        if not isinstance(key, str) or not key.strip():
            raise ScrappeyConfigError(
                "SCRAPPEY_API_KEY is not set: set the SCRAPPEY_API_KEY setting or "
                "environment variable, or set SCRAPPEY_ENABLED = False to crawl "
                "without Scrappey. Requests are never sent directly as a fallback."
            )
        request_timeout = _positive_float(settings, "DOWNLOAD_TIMEOUT", 180.0)
        return cls(
            api_key=key.strip(),
            api_url=_api_url(settings),
            transparent=_bool(settings, "SCRAPPEY_TRANSPARENT", True),
            default_params=_dict(settings, "SCRAPPEY_DEFAULT_PARAMS"),
            session_scope=_scope(
                settings.get("SCRAPPEY_SESSION_SCOPE", "spider"),
                "SCRAPPEY_SESSION_SCOPE",
            ),
            session_params=_dict(settings, "SCRAPPEY_SESSION_PARAMS"),
            pool_size=_int(settings, "SCRAPPEY_SESSION_POOL_SIZE", 1, minimum=1),
            session_concurrency=_int(
                settings, "SCRAPPEY_SESSION_CONCURRENCY", 1, minimum=1
            ),
            session_max_requests=_int(
                settings, "SCRAPPEY_SESSION_MAX_REQUESTS", 0, minimum=0
            ),
            session_idle_ttl=_positive_float(
                settings, "SCRAPPEY_SESSION_IDLE_TTL", 150.0, allow_zero=True
            ),
            max_sessions=_int(settings, "SCRAPPEY_MAX_SESSIONS", 0, minimum=0),
            session_wait_timeout=_positive_float(
                settings, "SCRAPPEY_SESSION_WAIT_TIMEOUT", 0.0, allow_zero=True
            ),
            create_attempts=_int(
                settings, "SCRAPPEY_SESSION_CREATE_ATTEMPTS", 5, minimum=1
            ),
            create_backoff=_positive_float(
                settings, "SCRAPPEY_SESSION_CREATE_BACKOFF", 1.0, allow_zero=True
            ),
            create_backoff_max=_positive_float(
                settings, "SCRAPPEY_SESSION_CREATE_BACKOFF_MAX", 30.0, allow_zero=True
            ),
            api_concurrency=_int(settings, "SCRAPPEY_API_CONCURRENCY", 64, minimum=1),
            control_timeout=_positive_float(settings, "SCRAPPEY_CONTROL_TIMEOUT", 30.0),
            close_timeout=_positive_float(settings, "SCRAPPEY_CLOSE_TIMEOUT", 30.0),
            request_timeout=request_timeout,
            ledger_dir=_ledger_dir(settings),
        )

    def for_spider(self, spider: Spider | None) -> Self:
        """Apply the ``scrappey_session_scope`` / ``scrappey_session_params`` spider attributes."""
        if spider is None:
            return self
        changes: dict[str, Any] = {}
        scope = getattr(spider, "scrappey_session_scope", None)
        if scope is not None:
            changes["session_scope"] = _scope(
                scope, "the scrappey_session_scope spider attribute"
            )
        params = getattr(spider, "scrappey_session_params", None)
        if params is not None:
            if not isinstance(params, dict):
                raise ScrappeyConfigError(
                    f"The scrappey_session_params spider attribute must be a dict, got {params!r}."
                )
            changes["session_params"] = dict(params)
        return replace(self, **changes) if changes else self


def _api_url(settings: BaseSettings) -> str:
    url = (
        settings.get("SCRAPPEY_API_URL")
        or os.environ.get("SCRAPPEY_API_URL")
        or DEFAULT_API_URL
    )
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ScrappeyConfigError(
            f"SCRAPPEY_API_URL must be an http(s) URL, got {url!r}."
        )
    if "key=" in url:
        raise ScrappeyConfigError(
            "SCRAPPEY_API_URL must not contain the API key; put it in SCRAPPEY_API_KEY instead."
        )
    return url.rstrip("/")


def _bool(settings: BaseSettings, name: str, default: bool) -> bool:
    try:
        return settings.getbool(name, default)
    except ValueError as ex:
        raise ScrappeyConfigError(
            f"{name} must be a boolean, got {settings.get(name)!r}."
        ) from ex


def _int(settings: BaseSettings, name: str, default: int, *, minimum: int) -> int:
    raw = settings.get(name, default)
    try:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise TypeError
        value = int(raw)
    except (TypeError, ValueError) as ex:
        raise ScrappeyConfigError(f"{name} must be an integer, got {raw!r}.") from ex
    if value < minimum:
        raise ScrappeyConfigError(f"{name} must be at least {minimum}, got {value}.")
    return value


def _positive_float(
    settings: BaseSettings, name: str, default: float, *, allow_zero: bool = False
) -> float:
    raw = settings.get(name, default)
    try:
        if isinstance(raw, bool):
            raise TypeError
        value = float(raw)
    except (TypeError, ValueError) as ex:
        raise ScrappeyConfigError(
            f"{name} must be a number of seconds, got {raw!r}."
        ) from ex
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise ScrappeyConfigError(f"{name} must be {bound} seconds, got {raw!r}.")
    return value


def _dict(settings: BaseSettings, name: str) -> dict[str, Any]:
    raw = settings.get(name)
    if raw is None:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as ex:
            raise ScrappeyConfigError(
                f"{name} must be a dict (or a JSON object string), got {raw!r}."
            ) from ex
    if hasattr(raw, "copy_to_dict"):  # a BaseSettings instance
        raw = raw.copy_to_dict()
    if not isinstance(raw, dict):
        raise ScrappeyConfigError(f"{name} must be a dict, got {raw!r}.")
    try:
        json.dumps(raw)
    except (TypeError, ValueError) as ex:
        raise ScrappeyConfigError(f"{name} must hold JSON values only: {ex}.") from ex
    return dict(raw)


def _scope(value: object, where: str) -> Scope:
    if value not in SCOPES:
        raise ScrappeyConfigError(
            f"{where} must be one of {', '.join(map(repr, SCOPES))}, got {value!r}."
        )
    return cast("Scope", value)


def _ledger_dir(settings: BaseSettings) -> Path | None:
    if not _bool(settings, "SCRAPPEY_LEDGER_ENABLED", True):
        return None
    raw = settings.get("SCRAPPEY_LEDGER_DIR")
    if raw is None or raw == "":
        return None  # resolved lazily to the project data dir, see ledger.py
    if not isinstance(raw, (str, os.PathLike)):
        raise ScrappeyConfigError(f"SCRAPPEY_LEDGER_DIR must be a path, got {raw!r}.")
    return Path(raw)
