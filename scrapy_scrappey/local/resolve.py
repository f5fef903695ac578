"""Host overrides: ``LocalScrappey(resolve={"*.test": "127.0.0.1"})``.

They let a test crawl "many domains" (``a.test``, ``b.test``, …) while every
connection goes to one site on 127.0.0.1: for a host matching a pattern the
engine connects to the pattern's address, keeping the URL's port, and the
``Host`` header, cookies and redirects keep the URL's host.

Patterns are host names with ``*`` (any run of characters) and ``?`` (one
character), matched case-insensitively against the whole host; the first
matching pattern wins. Only these wildcards are accepted so that the http
engine (:func:`fnmatch.fnmatchcase`) and Chromium's ``--host-resolver-rules``
agree on what a pattern matches. Addresses are IP addresses. URLs whose host
is already an IP address are never resolved, so patterns cannot match them.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

_PATTERN = re.compile(r"[a-z0-9_*?-]+(\.[a-z0-9_*?-]+)*\Z")


@dataclass(frozen=True)
class HostRule:
    """Connect to *address* for hosts matching *pattern*."""

    pattern: str
    address: str

    def matches(self, host: str) -> bool:
        """Whether *host* (any case, trailing dot or not) matches the pattern."""
        return fnmatchcase(host.lower().rstrip("."), self.pattern)


def parse_resolve(
    resolve: Mapping[str, str] | None, name: str = "resolve"
) -> tuple[HostRule, ...]:
    """The rules of a ``{pattern: address}`` mapping (``ValueError`` naming *name*)."""
    if resolve is None:
        return ()
    if not hasattr(resolve, "items"):
        raise ValueError(f"{name} must map host patterns to addresses, got {resolve!r}")
    return tuple(_rule(pattern, address, name) for pattern, address in resolve.items())


def parse_resolve_args(items: Iterable[str], flag: str = "--resolve") -> dict[str, str]:
    """``PATTERN=ADDRESS`` strings as a mapping, checked (``ValueError`` naming *flag*)."""
    resolve: dict[str, str] = {}
    for item in items:
        pattern, sep, address = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} wants PATTERN=ADDRESS, got {item!r}")
        resolve[pattern.strip()] = address.strip()
    parse_resolve(resolve, flag)
    return resolve


def address_for(rules: Iterable[HostRule], host: str) -> str | None:
    """The address of the first rule matching *host*, or ``None``."""
    return next((rule.address for rule in rules if rule.matches(host)), None)


def chromium_args(rules: Iterable[HostRule]) -> tuple[str, ...]:
    """The Chromium switch applying *rules* (none without rules)."""
    maps = [f"MAP {rule.pattern} {_bracketed(rule.address)}" for rule in rules]
    return (f"--host-resolver-rules={','.join(maps)}",) if maps else ()


class PinnedResolver(AbstractResolver):
    """An aiohttp resolver answering the rules' addresses for matching hosts.

    Other hosts go to aiohttp's default resolver.
    """

    def __init__(self, rules: tuple[HostRule, ...]) -> None:
        self._rules = rules
        self._default = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The pinned address for a matching *host*, else the default answer."""
        address = address_for(self._rules, host)
        if address is None:
            return await self._default.resolve(host, port, family)
        ip = ipaddress.ip_address(address)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        """Release the default resolver."""
        await self._default.close()


def _rule(pattern: object, address: object, name: str) -> HostRule:
    if not isinstance(pattern, str) or not _PATTERN.match(pattern.lower()):
        raise ValueError(
            f"{name}: {pattern!r} is not a host pattern (letters, digits, -, _, "
            "dots and the wildcards * and ?)"
        )
    try:
        ip = ipaddress.ip_address(address if isinstance(address, str) else "")
    except ValueError:
        raise ValueError(
            f"{name}: the address for {pattern!r} must be an IP address, got {address!r}"
        ) from None
    return HostRule(pattern.lower(), str(ip))


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address
