"""``--redis`` of the command line: the workers' shared ledger (``shared_ledger.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from scrapy.settings import Settings

from .exceptions import ScrappeyConfigError
from .redis_link import RedisLink, redis_url, shown_url
from .session_api import SESSION_ID_PREFIX
from .shared_ledger import owner_of, owners_blocking, reap_blocking

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Collection

    from ._cli_args import Parsers


class RedisFailed(Exception):
    """Redis (``--redis``) failed: the command ends with this message."""

    def __init__(self, link: RedisLink, error: Exception) -> None:
        super().__init__(
            f"cannot use Redis at {shown_url(link.url)} (--redis): {error}"
        )


def check_redis(parsers: Parsers, args: argparse.Namespace) -> None:
    """Exit with usage help unless ``--redis`` is a usable URL."""
    if args.redis:
        try:
            redis_url(Settings({"SCRAPPEY_REDIS_URL": args.redis}))
        except ScrappeyConfigError as exc:
            message = str(exc).replace("SCRAPPEY_REDIS_URL", "--redis")
            parsers.actions[args.action].error(message)


def redis_link(args: argparse.Namespace, api_key: str) -> RedisLink | None:
    """The workers' Redis of this key (never opened: only its keys are used)."""
    return RedisLink(args.redis, api_key) if args.redis else None


@dataclass(frozen=True)
class Workers:
    """Who owns each session: its id, or the shared ledger (with ``--redis``)."""

    owners: dict[str, str]
    alive: set[str] | None  # None: Redis not asked

    @classmethod
    def read(cls, link: RedisLink | None) -> Workers:
        if link is None:
            return cls({}, None)
        try:
            return cls(*owners_blocking(link))
        except ConnectionError as exc:
            raise RedisFailed(link, exc) from None

    def of(self, session_id: str) -> str:
        """The owner of *session_id*, and whether it is alive when Redis tells."""
        owner = self.owners.get(session_id) or owner_of(session_id, SESSION_ID_PREFIX)
        if owner is None or self.alive is None:
            return owner or "-"
        return f"{owner} ({'alive' if owner in self.alive else 'dead'})"


def reap_dead_workers(
    link: RedisLink, sweep: Callable[[list[str]], Collection[str]]
) -> dict[str, str]:
    """:func:`~scrapy_scrappey.shared_ledger.reap_blocking`, failures as :class:`RedisFailed`."""
    try:
        return reap_blocking(link, sweep)
    except ConnectionError as exc:
        raise RedisFailed(link, exc) from None
