"""Which requests go through Scrappey, with which parameters and session pool."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.utils.httpobj import urlparse_cached

from ._redact import redact_url
from .exceptions import ScrappeyConfigError
from .payload import merge_params
from .session_api import SESSION_ID_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy import Request

    from .config import Config

_UNSET: Any = object()
_NAMED = "name:"


@dataclass(frozen=True)
class Route:
    """How one request goes through Scrappey."""

    #: API parameters (raw mode: the spider's whole command).
    params: dict[str, Any]
    #: The session pool to lease from; ``None`` for no plugin-managed session.
    pool: str | None
    #: The page URL (in raw mode, the URL inside the command).
    target: str
    raw: bool = False
    #: The session of *pool* the request asks for (affinity), by id.
    session: str | None = None

    def slot_request(self, request: Request) -> Request:
        """The request whose download slot the fetched page belongs to.

        In raw mode, a copy of *request* addressed to the URL inside the
        command, not to the API; otherwise *request* itself.
        """
        if self.target == request.url:
            return request
        return request.replace(url=self.target)


class Router:
    """Reads the ``scrappey`` / ``scrappey_session`` meta keys against the config."""

    def __init__(
        self,
        config: Config,
        *,
        allowed_domains: list[str],
        pool_of: Callable[[str], str | None],
        choose_pool: Callable[[Request], object] | None = None,
    ) -> None:
        """*choose_pool* is the spider's ``scrappey_session_pool`` method, if any."""
        self._config = config
        self._allowed = allowed_domains
        # Subdomains share their domain's pool: of the spider's allowed
        # domains and the domains SCRAPPEY_SESSION_POOLS configures, the most
        # specific one that matches.
        self._domains = sorted(
            {*allowed_domains, *config.session_pools.domains()}, key=len, reverse=True
        )
        self._pool_of = pool_of
        self._choose_pool = choose_pool if callable(choose_pool) else None
        self._api_root = url_root(config.api_url)
        self._domain_pools: dict[str, str] = {}

    def initial_pools(self) -> list[str]:
        """The pools to create when the spider opens: the scope's, then the
        named pools listed in ``SCRAPPEY_SESSION_POOLS``."""
        scope = self._config.session_scope
        named = self._config.session_pools.named(domains=scope == "domain")
        if scope == "spider":
            return ["spider", *named]
        if scope == "domain":
            return [*(f"domain:{d}" for d in self._allowed), *named]
        return named

    def may_name_pool(self, request: Request) -> bool:
        """Whether *request* may go to a named pool: a cheap test that spares
        routing the (most) requests that can only use the scope's pool."""
        meta = request.meta
        params = meta.get("scrappey")
        return (
            self._choose_pool is not None
            or "scrappey_session" in meta
            or (isinstance(params, dict) and "session" in params)
            or self.is_raw(request)
        )

    def is_raw(self, request: Request) -> bool:
        """A request the spider addressed to the API itself."""
        return request.method == "POST" and url_root(request.url) == self._api_root

    def route(self, request: Request) -> Route | None:
        """``None`` for a request that is downloaded directly."""
        choice = request.meta.get("scrappey", _UNSET)
        if choice is False:
            return None
        if self.is_raw(request):
            return self._raw_route(request)
        if urlparse_cached(request).scheme not in ("http", "https"):
            return None  # data:, file:, s3:… cannot be fetched remotely
        if choice is _UNSET or choice is None:
            if not self._config.transparent:
                return None
            choice = True
        defaults = self._config.default_params or {}
        params = merge_params(defaults, choice, request)
        pool, session = self._pool_for(request, request.url, params)
        own = self._config.session_pools.own(pool) if pool else None
        if own is not None and own.request_params:
            # The pool's request_params over the defaults, the meta dict over both.
            params = merge_params({**defaults, **own.request_params}, choice, request)
        return Route(params=params, pool=pool, target=request.url, session=session)

    def _raw_route(self, request: Request) -> Route:
        try:
            command = json.loads(request.body)
        except ValueError:
            command = None
        if not isinstance(command, dict) or not isinstance(command.get("cmd"), str):
            raise ScrappeyConfigError(
                f"{redact_url(str(request))} is addressed to SCRAPPEY_API_URL but its "
                f"body is not a JSON object with a 'cmd'; raw-mode requests must carry "
                f"a Scrappey command."
            )
        url = command.get("url")
        # Only an absolute URL names a download slot; the API rejects the rest.
        target = url if isinstance(url, str) and _is_http_url(url) else request.url
        pool, session = (
            self._pool_for(request, target, command)
            if command["cmd"].startswith("request.")
            else (None, None)
        )
        return Route(
            params=command, pool=pool, target=target, raw=True, session=session
        )

    def _pool_for(
        self, request: Request, url: str, params: dict[str, Any]
    ) -> tuple[str | None, str | None]:
        """The pool to lease from, and the session of it asked for by id."""
        if "session" in params:
            # A session of this crawl is leased like the meta key; any other
            # is the spider's own, passed through.
            given = params["session"]
            pool = self._pool_of(given) if isinstance(given, str) else None
            return (pool, given) if pool is not None else (None, None)
        value = request.meta.get("scrappey_session", _UNSET)
        if value is _UNSET and self._choose_pool is not None:
            value = self._chosen_pool(request)
        if value is _UNSET or value is True or value is None:
            return self._scope_pool(url), None
        if value is False:
            return None, None
        if isinstance(value, str) and value:
            pool, session = session_meta_pool(value, self._pool_of)
            if pool is None:
                return self._scope_pool(url), None
            return pool, session
        raise ScrappeyConfigError(
            f"The 'scrappey_session' meta key of {request} must be a pool name, "
            f"a session id, True or False, got {value!r}."
        )

    def _chosen_pool(self, request: Request) -> object:
        """The spider method's pool for *request*: a name, None (the scope) or False."""
        assert self._choose_pool is not None
        value = self._choose_pool(request)
        if value is None or value is False or (isinstance(value, str) and value):
            return value
        raise ScrappeyConfigError(
            f"The scrappey_session_pool spider method must return a pool name, "
            f"None or False, got {value!r:.60} for {request}."
        )

    def _scope_pool(self, url: str) -> str | None:
        scope = self._config.session_scope
        if scope == "spider":
            return "spider"
        if scope == "none":
            return None
        host = (urlsplit(url).hostname or "").lower()
        pool = self._domain_pools.get(host)
        if pool is None:
            pool = self._domain_pools[host] = "domain:" + self._domain_of(host)
        return pool

    def _domain_of(self, host: str) -> str:
        for domain in self._domains:
            if host == domain or host.endswith("." + domain):
                return domain
        return host


def is_named_pool(pool: str) -> bool:
    """A pool named by the ``scrappey_session`` meta key (not a scope's pool)."""
    return pool.startswith(_NAMED)


def session_meta_pool(
    value: str, pool_of: Callable[[str], str | None]
) -> tuple[str | None, str | None]:
    """The pool a ``scrappey_session`` string asks for, and the session id asked for.

    A session this crawl created (*pool_of* knows its pool) is asked for
    by id; any other string names a pool. ``(None, None)``: the pool of
    the configured scope.
    """
    pool = pool_of(value)
    if pool is not None:
        return pool, value
    if value.startswith(SESSION_ID_PREFIX):
        # A session id this crawl no longer knows (a resumed job, or copied
        # meta): a name-pool per stale id would leak sessions.
        return None, None
    return _NAMED + value, None


def allowed_domains(spider: object) -> list[str]:
    """The spider's ``allowed_domains``, normalised."""
    domains = getattr(spider, "allowed_domains", None) or []
    return [d.lower().lstrip(".") for d in domains if isinstance(d, str) and d]


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def url_root(url: str) -> tuple[str, str, str]:
    """Scheme, host and path: what identifies the API endpoint."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/")
