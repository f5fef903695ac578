"""Fault injection: making the local server misbehave on purpose.

:class:`Faults` is the configuration, a plain dataclass. It is given to
``LocalScrappey(faults=...)``, replaced at runtime with ``server.faults =
Faults(...)`` (which also restarts the seeded random sequence and the
``fail_creates`` / ``fail_destroys`` countdowns), or tuned by mutating
``server.faults`` fields in place (read on every command). Subprocess servers
take the same fields as CLI flags or as a JSON object posted to
``/__local__/faults``.

Unless a field says otherwise, faults apply to ``request.*`` commands only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from scrapy_scrappey.codes import ERROR_CODES, TRANSIENT_CODES
from scrapy_scrappey.local.antibot_pages import VENDORS
from scrapy_scrappey.local.protocol import ALL_COMMANDS

FaultKind = Literal["error", "http_502", "truncated"]

#: What an overloaded Cloudflare/nginx front answers instead of the API.
BAD_GATEWAY_HTML = """<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>cloudflare</center>
</body>
</html>
"""

_RATES = ("error_rate", "http_502_rate", "truncated_rate", "slow_rate")


@dataclass
class Faults:
    """Which faults to inject, and how often.

    * ``latency``: extra seconds before answering, per command name
      (``{"request.get": 0.2, "sessions.destroy": 5.0}``); any command.
    * ``error_rate``: share (0..1) of ``request.*`` answered with an error
      envelope carrying one of ``error_codes`` (default: the transient codes
      of :data:`scrapy_scrappey.codes.TRANSIENT_CODES`).
    * ``http_502_rate``: share of ``request.*`` answered with HTTP 502 and a
      Cloudflare-like HTML page, nothing fetched.
    * ``truncated_rate``: share of ``request.*`` whose success JSON (HTTP 200,
      ``application/json``) is cut in half; the target is fetched.
    * ``slow_rate`` / ``slow_seconds``: share of ``request.*`` delayed by
      ``slow_seconds`` more; combines with the other faults.
    * ``expire_after_requests``: a session expires (is removed and counted as
      expired) once it has been named by that many ``request.*`` commands;
      later commands naming it get "Session not found". ``None`` = never.
    * ``fail_creates`` / ``fail_destroys``: the first N ``sessions.create``
      calls fail with CODE-0029, the first N ``sessions.destroy`` calls with
      CODE-0031 (counted from when these faults were set).
    * ``over_limit_seconds``: every ``sessions.create`` fails with CODE-0029
      for that many seconds from when these faults were set (an account
      whose session limit frees up later).
    * ``ban_after_requests`` / ``ban_vendors``: a session that has been named
      by that many ``request.*`` commands is "banned": every later request on
      it gets a vendor's block page (``data: success``, the vendor's status,
      headers, cookies and HTML; see ``antibot_pages.py``) instead of the
      target. Banned sessions take the vendors of ``ban_vendors`` (default:
      all) in turn, in the order they are banned. ``None`` = never.
    * ``seed``: seed of the random draws, for reproducible runs.
    """

    latency: dict[str, float] = field(default_factory=dict)
    error_rate: float = 0.0
    error_codes: tuple[str, ...] = TRANSIENT_CODES
    http_502_rate: float = 0.0
    truncated_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    expire_after_requests: int | None = None
    fail_creates: int = 0
    fail_destroys: int = 0
    over_limit_seconds: float = 0.0
    ban_after_requests: int | None = None
    ban_vendors: tuple[str, ...] = VENDORS
    seed: int | None = None

    def __post_init__(self) -> None:
        # JSON and CLI callers hand over lists (or one code as a string).
        self.error_codes = _names(self.error_codes, "error_codes")
        self.ban_vendors = _names(self.ban_vendors, "ban_vendors")
        latency: object = self.latency
        if not isinstance(latency, dict):
            raise TypeError(
                f"Faults.latency must map commands to seconds, got {latency!r}"
            )
        self.latency = dict(latency)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field with a bad value."""
        for name in _RATES:
            rate = getattr(self, name)
            if not _is_number(rate) or not 0.0 <= rate <= 1.0:
                raise ValueError(
                    f"Faults.{name} must be a number in 0..1, got {rate!r:.40}"
                )
        _check_latency(self.latency)
        _check_codes(self.error_codes)
        for name in ("slow_seconds", "over_limit_seconds"):
            seconds = getattr(self, name)
            if not _is_number(seconds) or seconds < 0:
                raise ValueError(
                    f"Faults.{name} must be a finite number >= 0, got {seconds!r:.40}"
                )
        for name in ("fail_creates", "fail_destroys"):
            if not _is_count(getattr(self, name)):
                raise ValueError(f"Faults.{name} must be an integer >= 0")
        limit = self.expire_after_requests
        if limit is not None and (not _is_count(limit) or limit < 1):
            raise ValueError("Faults.expire_after_requests must be None or >= 1")
        limit = self.ban_after_requests
        if limit is not None and not _is_count(limit):
            raise ValueError("Faults.ban_after_requests must be None or >= 0")
        _check_vendors(self.ban_vendors)
        if self.seed is not None and not _is_count(self.seed):
            raise ValueError("Faults.seed must be None or an integer >= 0")

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values."""
        data = dataclasses.asdict(self)
        data["error_codes"] = list(self.error_codes)
        data["ban_vendors"] = list(self.ban_vendors)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Faults:
        """Build from a JSON object; unknown keys and bad values raise ``ValueError``.

        (Constructing :class:`Faults` directly raises ``TypeError`` for a field
        of the wrong shape and ``ValueError`` for a bad value.)
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:  # a field of the wrong shape, e.g. latency: 3
            raise ValueError(str(exc)) from exc


@dataclass(frozen=True)
class FaultPlan:
    """What to do to one ``request.*``: an extra delay and at most one fault."""

    delay: float = 0.0
    slow: bool = False
    kind: FaultKind | None = None
    code: str | None = None
    #: The vendor whose block page replaces the target (a banned session).
    ban: str | None = None


class FaultInjector:
    """Draws faults for one :class:`Faults` configuration.

    Fields are read live, so in-place mutation of ``faults`` takes effect on
    the next command; the random sequence and countdowns belong to this
    injector and restart when a new one is built.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._creates_failed = 0
        self._destroys_failed = 0
        self._since = time.monotonic()
        #: Banned session ids and their vendor, in the order they were banned.
        self._bans: dict[str, str] = {}

    def latency(self, cmd: str) -> float:
        """Seconds to wait before serving *cmd*."""
        return float(self.faults.latency.get(cmd, 0.0))

    def plan_request(self, cmd: str) -> FaultPlan:
        """Decide the faults of one ``request.*`` command."""
        f = self.faults
        slow = self._hit(f.slow_rate)
        delay = self.latency(cmd) + (f.slow_seconds if slow else 0.0)
        if self._hit(f.error_rate) and f.error_codes:
            code = self._rng.choice(f.error_codes)
            return FaultPlan(delay, slow, "error", code)
        if self._hit(f.http_502_rate):
            return FaultPlan(delay, slow, "http_502")
        if self._hit(f.truncated_rate):
            return FaultPlan(delay, slow, "truncated")
        return FaultPlan(delay, slow)

    def take_create_failure(self) -> bool:
        """Whether this ``sessions.create`` fails: one of the first N, or in the window."""
        if time.monotonic() - self._since < self.faults.over_limit_seconds:
            return True
        if self._creates_failed < self.faults.fail_creates:
            self._creates_failed += 1
            return True
        return False

    def take_destroy_failure(self) -> bool:
        """Whether this ``sessions.destroy`` is one of the first N to fail."""
        if self._destroys_failed < self.faults.fail_destroys:
            self._destroys_failed += 1
            return True
        return False

    def ban_vendor(self, session_id: str, requests: int) -> str | None:
        """The vendor whose block page the *requests*-th request of a session gets.

        ``None`` while the session is under ``ban_after_requests``; once over,
        the session keeps the vendor it was given at its first block page.
        """
        limit = self.faults.ban_after_requests
        if limit is None or requests <= limit:
            return None
        vendor = self._bans.get(session_id)
        if vendor is None:
            vendors = self.faults.ban_vendors
            vendor = vendors[len(self._bans) % len(vendors)]
            self._bans[session_id] = vendor
        return vendor

    def _hit(self, rate: float) -> bool:
        # No draw for a zero rate, so enabling one knob does not shift the
        # seeded sequence seen by tests that only use another.
        return rate > 0 and self._rng.random() < rate


def truncate_json(payload: dict[str, Any]) -> str:
    """A valid JSON text cut in half: never parseable, starts like the real one."""
    text = json.dumps(payload)
    return text[: max(1, len(text) // 2)]


def _is_number(value: object) -> bool:
    """A finite int or float: NaN, infinities and huge integers would stall sleeps."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_latency(latency: dict[str, float]) -> None:
    for cmd, seconds in latency.items():
        if cmd not in ALL_COMMANDS:
            raise ValueError(f"Faults.latency: unknown command {cmd!r}")
        if not _is_number(seconds) or seconds < 0:
            raise ValueError(
                f"Faults.latency[{cmd!r}] must be a finite number >= 0, "
                f"got {seconds!r:.40}"
            )


def _names(value: object, name: str) -> tuple[str, ...]:
    """A list of names as a tuple; JSON and CLI callers hand over lists or one string."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"Faults.{name} must be a list of names, got {value!r:.60}")
    return tuple(value)


def _check_vendors(vendors: tuple[str, ...]) -> None:
    unknown = [
        f"{v!r:.40}" for v in vendors if not isinstance(v, str) or v not in VENDORS
    ]
    if unknown:
        raise ValueError(
            f"Faults.ban_vendors: unknown vendors {', '.join(unknown)} "
            f"(known: {', '.join(VENDORS)})"
        )
    if not vendors:
        raise ValueError("Faults.ban_vendors must name at least one vendor")


def _check_codes(codes: tuple[str, ...]) -> None:
    unknown = [
        f"{code!r:.40}"
        for code in codes
        if not isinstance(code, str) or code not in ERROR_CODES
    ]
    if unknown:
        raise ValueError(f"Faults.error_codes: unknown codes {', '.join(unknown)}")
    if not codes:
        raise ValueError("Faults.error_codes must name at least one code")
