"""Per-pool settings: ``SCRAPPEY_SESSION_POOLS`` and ``SCRAPPEY_STATS_PER_POOL``.

A key of ``SCRAPPEY_SESSION_POOLS`` (or of the spider attribute
``scrappey_session_pools``, which replaces the setting) names a pool: the
named pool of meta ``scrappey_session = "<key>"`` and the domain pool of
``<key>`` under ``SCRAPPEY_SESSION_SCOPE = "domain"``. Its value overrides,
for that pool only, the global settings listed in :data:`POOL_FIELDS`.
:meth:`SessionPools.settings` resolves what one pool key of the session
manager (``"spider"``, ``"domain:<d>"``, ``"name:<n>"``) gets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from ._health_config import InitStep, init_steps
from ._settings import read_bool, read_dict, read_float, read_int, require_json
from .exceptions import ScrappeyConfigError

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

    # typing.Self requires Python 3.11
    from typing_extensions import Self

SETTING = "SCRAPPEY_SESSION_POOLS"
ATTRIBUTE = "scrappey_session_pools"

#: What one pool may override.
POOL_FIELDS = (
    "size",
    "concurrency",
    "params",
    "request_params",
    "init",
    "max_requests",
    "idle_ttl",
    "max_errors",
)
_INTS = {"size": 1, "concurrency": 1, "max_requests": 0, "max_errors": 1}
#: request_params go into a request.* command: the plugin sets these itself.
_RESERVED_REQUEST_PARAMS = ("cmd", "url", "session")
#: What the plugin's own sessions.create sets.
_RESERVED_CREATE_PARAMS = ("cmd", "session")
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_T = TypeVar("_T", int, float)


@dataclass(frozen=True)
class PoolSettings:
    """The effective settings of one pool (global values, then its own)."""

    size: int
    concurrency: int
    #: Merged into its ``sessions.create`` (``SCRAPPEY_SESSION_PARAMS``, then its own).
    params: Mapping[str, Any]
    #: Merged into each ``request.*`` on it, under the ``scrappey`` meta dict.
    request_params: Mapping[str, Any]
    #: Its own init steps; ``None`` runs the crawl's init (method or setting).
    init: tuple[InitStep, ...] | None
    max_requests: int
    idle_ttl: float
    max_errors: int


@dataclass(frozen=True)
class PoolOverrides:
    """What one entry of ``SCRAPPEY_SESSION_POOLS`` sets (``None``: not set)."""

    size: int | None = None
    concurrency: int | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    request_params: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    init: tuple[InitStep, ...] | None = None
    max_requests: int | None = None
    idle_ttl: float | None = None
    max_errors: int | None = None


@dataclass(frozen=True)
class SessionPools:
    """``SCRAPPEY_SESSION_POOLS`` and ``SCRAPPEY_STATS_PER_POOL``, checked."""

    pools: Mapping[str, PoolOverrides] = field(default_factory=lambda: _EMPTY)
    #: ``SCRAPPEY_STATS_PER_POOL``: session stats also under ``scrappey/pools/<pool>/``.
    stats_per_pool: bool = False

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Self:
        """Read both settings; ScrappeyConfigError names the setting, pool and key."""
        raw = settings.get(SETTING)
        if not isinstance(raw, Mapping):  # None, or JSON from -s
            raw = read_dict(settings, SETTING)
        return cls(
            pools=read_pools(raw, SETTING),
            stats_per_pool=read_bool(settings, "SCRAPPEY_STATS_PER_POOL", False),
        )

    def own(self, pool_key: str) -> PoolOverrides | None:
        """The entry configuring *pool_key* (a manager key), if any."""
        return self.pools.get(pool_label(pool_key)) if self.pools else None

    def settings(self, pool_key: str, defaults: PoolSettings) -> PoolSettings:
        """What pool *pool_key* gets: its own entry over *defaults* (the global settings).

        A named pool is one session unless its entry sets ``size``.
        """
        own = self.own(pool_key) or PoolOverrides()
        size = 1 if pool_key.startswith("name:") else defaults.size
        return PoolSettings(
            size=_given(own.size, size),
            concurrency=_given(own.concurrency, defaults.concurrency),
            params=MappingProxyType({**defaults.params, **own.params}),
            request_params=own.request_params,
            init=own.init,
            max_requests=_given(own.max_requests, defaults.max_requests),
            idle_ttl=_given(own.idle_ttl, defaults.idle_ttl),
            max_errors=_given(own.max_errors, defaults.max_errors),
        )

    def manager_key(self, label: str, scope: str) -> str:
        """The session manager's key of the pool a key of this setting configures."""
        if label == "spider":
            return "spider"
        if scope == "domain" and _is_host(label):
            return f"domain:{label.lower()}"
        return f"name:{label}"

    def domains(self) -> list[str]:
        """The keys that look like host names, longest first: under the domain
        scope each configures the pool of that domain and its subdomains."""
        return sorted(
            (k.lower() for k in self.pools if _is_host(k)), key=len, reverse=True
        )

    def named(self, *, domains: bool) -> list[str]:
        """Manager keys of the listed named pools (created when the spider opens).

        With *domains* (the domain scope), a key that looks like a host name
        (a dot, or ``localhost``) configures a domain pool and is left out;
        so is ``"spider"``, the key of the spider scope's pool.
        """
        return [
            f"name:{k}"
            for k in self.pools
            # "spider" configures the spider scope's pool, created as such.
            if k != "spider" and not (domains and _is_host(k))
        ]


def read_pools(raw: object, where: str) -> Mapping[str, PoolOverrides]:
    """``{pool: {field: value}}`` checked; errors name *where*, the pool and the key."""
    if not isinstance(raw, Mapping):
        raise ScrappeyConfigError(
            f"{where} must be a dict of pool name -> dict of pool settings, got {raw!r:.100}."
        )
    pools: dict[str, PoolOverrides] = {}
    for name, conf in raw.items():
        if not isinstance(name, str) or not name:
            raise ScrappeyConfigError(
                f"{where} keys must be pool names or domains (non-empty strings), got {name!r:.60}."
            )
        pools[name] = _entry(conf, f"{where}[{name!r}]")
    return MappingProxyType(pools)


def pool_label(pool_key: str) -> str:
    """The name a user gives pool *pool_key*: ``name:a`` -> ``a``, ``domain:d`` -> ``d``."""
    kind, sep, rest = pool_key.partition(":")
    return rest if sep and kind in ("name", "domain") else pool_key


def _entry(conf: object, where: str) -> PoolOverrides:
    if not isinstance(conf, Mapping):
        raise ScrappeyConfigError(f"{where} must be a dict, got {conf!r:.100}.")
    unknown = sorted(str(k) for k in conf if k not in POOL_FIELDS)
    if unknown:
        raise ScrappeyConfigError(
            f"{where}[{unknown[0]!r}] is not a pool setting; a pool sets "
            f"{', '.join(POOL_FIELDS)}."
        )
    values: dict[str, Any] = {}
    for name, minimum in _INTS.items():
        if name in conf:
            values[name] = read_int(
                conf, name, 0, minimum=minimum, label=f"{where}[{name!r}]"
            )
    if "idle_ttl" in conf:
        values["idle_ttl"] = read_float(
            conf, "idle_ttl", 0.0, allow_zero=True, label=f"{where}['idle_ttl']"
        )
    if "params" in conf:
        values["params"] = _params(
            conf["params"], f"{where}['params']", reserved=_RESERVED_CREATE_PARAMS
        )
    if "request_params" in conf:
        values["request_params"] = _params(
            conf["request_params"],
            f"{where}['request_params']",
            reserved=_RESERVED_REQUEST_PARAMS,
        )
    if "init" in conf:
        values["init"] = init_steps(conf["init"], f"{where}['init']")
    return PoolOverrides(**values)


def _params(
    value: object, where: str, *, reserved: tuple[str, ...] = ()
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ScrappeyConfigError(
            f"{where} must be a dict of API parameters, got {value!r:.100}."
        )
    for name in reserved:
        if name in value:
            raise ScrappeyConfigError(
                f"{where} sets {name!r}, which the plugin sets itself; remove it."
            )
    return MappingProxyType(dict(require_json(value, where)))


def _given(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def _is_host(key: str) -> bool:
    return "." in key or key == "localhost"
