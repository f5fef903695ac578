"""Every setting the plugin reads, read once into a typed :class:`Config`.

That includes the Scrapy settings the plugin honours (``SCRAPPEY_ENABLED``,
``HTTPCACHE_ENABLED``, ``DOWNLOAD_TIMEOUT``): no other module reads
``crawler.settings``. The politeness settings are Scrapy's own downloader's,
which builds the slots the throttle reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import is_asyncio_available
from scrapy.utils.project import data_path

from ._health_config import InitStep, ban_statuses, checker_path, init_steps
from ._settings import read_bool, read_dict, read_float, read_int
from .bans import BUILTIN_DETECTORS, Detector, read_detectors
from .cost import CostConfig
from .exceptions import ScrappeyConfigError
from .pool_config import ATTRIBUTE, PoolSettings, SessionPools, read_pools
from .redis_link import redis_heartbeat, redis_url

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.settings import BaseSettings

    # typing.Self requires Python 3.11
    from typing_extensions import Self

DEFAULT_API_URL = "https://publisher.scrappey.com/api/v1"
SCOPES = ("spider", "domain", "none")
Scope = Literal["spider", "domain", "none"]

_ASYNCIO_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
_CRAWL_KEY_ADVICE = (
    "or set SCRAPPEY_ENABLED = False to crawl without Scrappey. Requests are "
    "never sent directly as a fallback"
)


def require_asyncio() -> None:
    """Refuse to start on a Twisted reactor that cannot run asyncio code.

    The plugin awaits aiohttp and asyncio futures; on another reactor the
    crawl would fail later, deep inside asyncio, on the first request.
    """
    try:
        available = is_asyncio_available()
    except RuntimeError:  # no reactor and no loop yet: not a crawl
        return
    if not available:
        raise ScrappeyConfigError(
            "scrapy-scrappey needs the asyncio reactor, and TWISTED_REACTOR "
            "installed another one: set TWISTED_REACTOR = "
            f"{_ASYNCIO_REACTOR!r} (Scrapy's default) or remove the setting."
        )


def default_ledger_dir() -> Path:
    """``.scrapy/scrappey-sessions`` of the current Scrapy project.

    Outside a project, ``.scrapy/scrappey-sessions`` under the current
    directory. The ledger creates the folder when a crawl first writes to it.
    """
    return Path(data_path("scrappey-sessions")).absolute()


@dataclass(frozen=True)
class Account:
    """The API endpoint and key, and the folder of their session ledger.

    Crawls and ``python -m scrapy_scrappey sessions`` must agree on these to
    find the same sessions, so both read them with :meth:`from_settings`.
    """

    api_key: str
    api_url: str = DEFAULT_API_URL
    ledger_dir: Path = field(default_factory=default_ledger_dir)

    @classmethod
    def from_settings(
        cls, settings: BaseSettings, *, missing_key_advice: str = _CRAWL_KEY_ADVICE
    ) -> Self:
        """Read ``SCRAPPEY_API_KEY`` and ``SCRAPPEY_API_URL`` (setting, then
        environment variable) and ``SCRAPPEY_LEDGER_DIR``.

        *missing_key_advice* ends the error raised when there is no key.
        """
        key = settings.get("SCRAPPEY_API_KEY") or os.environ.get("SCRAPPEY_API_KEY")
        if not isinstance(key, str) or not key.strip():
            raise ScrappeyConfigError(
                "SCRAPPEY_API_KEY is not set: set the SCRAPPEY_API_KEY setting or "
                f"environment variable, {missing_key_advice}."
            )
        return cls(key.strip(), _api_url(settings), _ledger_dir(settings))


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
    #: Whether sessions are recorded in the ledger (``SCRAPPEY_LEDGER_ENABLED``).
    ledger_enabled: bool = True
    #: The ledger's folder, resolved (also when the ledger is disabled).
    ledger_dir: Path = field(default_factory=default_ledger_dir)
    #: ``HTTPCACHE_ENABLED``: sessions are then created on the first cache miss.
    http_cache: bool = False
    # -- session health (init/checks)
    #: Steps run on every new session before it serves a request.
    session_init: tuple[InitStep, ...] = ()
    #: Failed inits in a row in one pool that close the spider.
    session_max_bad_inits: int = 8
    #: Import path (or class) of a session checker, built with build_from_crawler.
    session_checker: str | type | None = None
    #: Target statuses that mean "this browser is blocked".
    session_ban_statuses: frozenset[int] = frozenset()
    #: Failed checks in a row across the crawl that close the spider.
    max_consecutive_check_failures: int = 20
    #: ``SCRAPPEY_BAN_DETECTORS``, resolved: (name, detector), run first.
    ban_detectors: tuple[tuple[str, Detector], ...] = tuple(BUILTIN_DETECTORS.items())
    # -- session health (errors)
    #: Session-bound API errors after which a session is retired.
    session_max_errors: int = 1
    #: Seconds sessions.create keeps retrying "too many sessions" (CODE-0029).
    session_over_limit_wait: float = 240.0
    #: ``SCRAPPEY_SESSION_POOLS`` and ``SCRAPPEY_STATS_PER_POOL``; see :meth:`pool_settings`.
    session_pools: SessionPools = field(default_factory=SessionPools)
    #: Prices, the hard budget, SCRAPPEY_MIN_BALANCE and SCRAPPEY_ITEM_FIELD.
    cost: CostConfig = field(default_factory=CostConfig)
    #: ``SCRAPPEY_REDIS_URL``: the Redis shared by the workers (``None``: one process).
    redis_url: str | None = None
    #: ``SCRAPPEY_REDIS_HEARTBEAT``: seconds between a worker's heartbeats (``None``: 5).
    redis_heartbeat: float | None = None

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Self:
        """Read and validate every setting the plugin uses.

        Raises :class:`~scrapy.exceptions.NotConfigured` when
        ``SCRAPPEY_ENABLED`` is False, and :class:`ScrappeyConfigError` naming
        the culprit setting when a value is wrong.
        """
        if not read_bool(settings, "SCRAPPEY_ENABLED", True):
            raise NotConfigured(
                "SCRAPPEY_ENABLED is False: requests are not sent through Scrappey"
            )
        account = Account.from_settings(settings)
        request_timeout = read_float(settings, "DOWNLOAD_TIMEOUT", 180.0)
        return cls(
            api_key=account.api_key,
            api_url=account.api_url,
            transparent=read_bool(settings, "SCRAPPEY_TRANSPARENT", True),
            default_params=read_dict(settings, "SCRAPPEY_DEFAULT_PARAMS"),
            session_scope=_scope(
                settings.get("SCRAPPEY_SESSION_SCOPE", "spider"),
                "SCRAPPEY_SESSION_SCOPE",
            ),
            session_params=read_dict(settings, "SCRAPPEY_SESSION_PARAMS"),
            pool_size=read_int(settings, "SCRAPPEY_SESSION_POOL_SIZE", 1, minimum=1),
            session_concurrency=read_int(
                settings, "SCRAPPEY_SESSION_CONCURRENCY", 1, minimum=1
            ),
            session_max_requests=read_int(
                settings, "SCRAPPEY_SESSION_MAX_REQUESTS", 0, minimum=0
            ),
            session_idle_ttl=read_float(
                settings, "SCRAPPEY_SESSION_IDLE_TTL", 150.0, allow_zero=True
            ),
            max_sessions=read_int(settings, "SCRAPPEY_MAX_SESSIONS", 0, minimum=0),
            session_wait_timeout=read_float(
                settings, "SCRAPPEY_SESSION_WAIT_TIMEOUT", 0.0, allow_zero=True
            ),
            create_attempts=read_int(
                settings, "SCRAPPEY_SESSION_CREATE_ATTEMPTS", 5, minimum=1
            ),
            create_backoff=read_float(
                settings, "SCRAPPEY_SESSION_CREATE_BACKOFF", 1.0, allow_zero=True
            ),
            create_backoff_max=read_float(
                settings, "SCRAPPEY_SESSION_CREATE_BACKOFF_MAX", 30.0, allow_zero=True
            ),
            api_concurrency=read_int(
                settings, "SCRAPPEY_API_CONCURRENCY", 64, minimum=1
            ),
            control_timeout=read_float(settings, "SCRAPPEY_CONTROL_TIMEOUT", 30.0),
            close_timeout=read_float(settings, "SCRAPPEY_CLOSE_TIMEOUT", 30.0),
            request_timeout=request_timeout,
            ledger_enabled=read_bool(settings, "SCRAPPEY_LEDGER_ENABLED", True),
            ledger_dir=account.ledger_dir,
            http_cache=read_bool(settings, "HTTPCACHE_ENABLED", False),
            # -- session health (init/checks)
            session_init=init_steps(
                settings.get("SCRAPPEY_SESSION_INIT"), "SCRAPPEY_SESSION_INIT"
            ),
            session_max_bad_inits=read_int(
                settings, "SCRAPPEY_SESSION_MAX_BAD_INITS", 8, minimum=1
            ),
            session_checker=checker_path(
                settings.get("SCRAPPEY_SESSION_CHECKER"), "SCRAPPEY_SESSION_CHECKER"
            ),
            session_ban_statuses=ban_statuses(
                settings.get("SCRAPPEY_SESSION_BAN_STATUSES"),
                "SCRAPPEY_SESSION_BAN_STATUSES",
            ),
            max_consecutive_check_failures=read_int(
                settings, "SCRAPPEY_MAX_CONSECUTIVE_CHECK_FAILURES", 20, minimum=1
            ),
            ban_detectors=read_detectors(
                settings.get("SCRAPPEY_BAN_DETECTORS"), "SCRAPPEY_BAN_DETECTORS"
            ),
            # -- session health (errors)
            session_max_errors=read_int(
                settings, "SCRAPPEY_SESSION_MAX_ERRORS", 1, minimum=1
            ),
            session_over_limit_wait=read_float(
                settings, "SCRAPPEY_SESSION_OVER_LIMIT_WAIT", 240.0, allow_zero=True
            ),
            session_pools=SessionPools.from_settings(settings),
            cost=CostConfig.from_settings(settings),
            redis_url=redis_url(settings),
            redis_heartbeat=redis_heartbeat(settings),
        )

    def pool_settings(self, pool_key: str) -> PoolSettings:
        """The settings of the session manager's pool *pool_key* (``"spider"``,
        ``"domain:<d>"``, ``"name:<n>"``): its ``SCRAPPEY_SESSION_POOLS`` entry
        over the global settings; a named pool has one session by default,
        and no pool more than ``SCRAPPEY_MAX_SESSIONS``."""
        own = self.session_pools.settings(
            pool_key,
            PoolSettings(
                size=self.pool_size,
                concurrency=self.session_concurrency,
                params=self.session_params or {},
                request_params={},
                init=None,
                max_requests=self.session_max_requests,
                idle_ttl=self.session_idle_ttl,
                max_errors=self.session_max_errors,
            ),
        )
        if self.max_sessions and own.size > self.max_sessions:
            return replace(own, size=self.max_sessions)
        return own

    def timeout_for(self, request: Request) -> float:
        """Seconds an API call for *request* may take: its ``download_timeout`` meta key, else DOWNLOAD_TIMEOUT."""
        if "download_timeout" not in request.meta:
            return self.request_timeout
        return read_float(
            request.meta,
            "download_timeout",
            self.request_timeout,
            label=f"The 'download_timeout' meta key of {request}",
        )

    def for_spider(self, spider: Spider | None) -> Self:
        """Apply the spider attributes that override settings.

        ``scrappey_session_scope``, ``scrappey_session_params``,
        ``scrappey_session_init`` (a list; a method of that name is used by the
        middleware instead), ``scrappey_session_pools`` and
        ``scrappey_ban_detectors``.
        """
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
        steps = getattr(spider, "scrappey_session_init", None)
        if steps is not None and not callable(steps):
            changes["session_init"] = init_steps(
                steps, "The scrappey_session_init spider attribute"
            )
        pools = getattr(spider, "scrappey_session_pools", None)
        if pools is not None:
            changes["session_pools"] = replace(
                self.session_pools, pools=read_pools(pools, ATTRIBUTE)
            )
        detectors = getattr(spider, "scrappey_ban_detectors", None)
        if detectors is not None:
            changes["ban_detectors"] = read_detectors(
                detectors, "The scrappey_ban_detectors spider attribute"
            )
        return replace(self, **changes) if changes else self


def _api_url(settings: BaseSettings) -> str:
    url = (
        settings.get("SCRAPPEY_API_URL")
        or os.environ.get("SCRAPPEY_API_URL")
        or DEFAULT_API_URL
    )
    # The key check comes first: the other message quotes the URL.
    if isinstance(url, str) and "key=" in url:
        raise ScrappeyConfigError(
            "SCRAPPEY_API_URL must not contain the API key; put it in SCRAPPEY_API_KEY instead."
        )
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ScrappeyConfigError(
            f"SCRAPPEY_API_URL must be an http(s) URL, got {url!r}."
        )
    # The one place the URL is normalised: the ledger's folder name hashes it.
    return url.rstrip("/")


def _scope(value: object, where: str) -> Scope:
    if value not in SCOPES:
        raise ScrappeyConfigError(
            f"{where} must be one of {', '.join(map(repr, SCOPES))}, got {value!r}."
        )
    return cast("Scope", value)


def _ledger_dir(settings: BaseSettings) -> Path:
    raw = settings.get("SCRAPPEY_LEDGER_DIR")
    if raw is None or raw == "":
        return default_ledger_dir()
    if not isinstance(raw, (str, os.PathLike)):
        raise ScrappeyConfigError(f"SCRAPPEY_LEDGER_DIR must be a path, got {raw!r}.")
    return Path(raw).absolute()
