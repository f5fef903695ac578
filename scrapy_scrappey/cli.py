"""``python -m scrapy_scrappey sessions list|cleanup``: see and free remote sessions;
``python -m scrapy_scrappey balance``: the balance of the key.

Remote sessions are billed and capped per account. ``sessions list`` shows what
the API reports as open next to what the local session ledger (see
:mod:`scrapy_scrappey.ledger`) knows about; ``sessions cleanup`` destroys what
crashed crawls left behind, or with ``--all --yes`` every open session.

This is the only synchronous part of the package and the only user of
``requests``; crawls talk to the API through aiohttp. Both read the API's
answers with the same functions (``parse_reply``, ``parse_balance``).
"""

from __future__ import annotations

import datetime
import re
import sys
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import requests
from scrapy.settings import Settings
from scrapy.utils.project import get_project_settings, inside_project

from scrapy_scrappey._cli_args import PROG, Parsers, build_parsers, check_args
from scrapy_scrappey._cli_redis import (
    RedisFailed,
    Workers,
    check_redis,
    reap_dead_workers,
    redis_link,
)
from scrapy_scrappey._redact import key_hint, redact_text, redact_url
from scrapy_scrappey.client import parse_balance, parse_reply
from scrapy_scrappey.codes import ErrorKind
from scrapy_scrappey.config import Account
from scrapy_scrappey.exceptions import (
    ScrappeyAPIError,
    ScrappeyAuthError,
    ScrappeyConfigError,
    ScrappeyTransportError,
)
from scrapy_scrappey.ledger import SessionLedger
from scrapy_scrappey.orphans import Sweep, destroy_orphans_blocking

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from scrapy_scrappey.redis_link import RedisLink

AUTH_MESSAGE = "the API rejected the key (HTTP 401); check SCRAPPEY_API_KEY"

_ERRNO_RE = re.compile(r"\[Errno -?\d+\][^'\")]*")


class _CliError(Exception):
    """A failure that ends the command: printed on stderr, then exit *exit_code*."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _ApiError(Exception):
    """One API call failed, but the API is reachable and accepts the key.

    *kind* is what the API's error means (``client.classify``); ``None`` when
    no reply came back.
    """

    def __init__(self, message: str, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class _Context:
    client: _ApiClient
    ledger: SessionLedger
    out: _Output
    #: ``--redis``: the shared ledger of the workers (``None``: not asked).
    redis: RedisLink | None = None


class _Output:
    """stdout/stderr writer that scrubs the key from everything it prints."""

    def __init__(self, key: str) -> None:
        self._key = key

    def line(self, text: str = "") -> None:
        print(redact_text(text, self._key), file=sys.stdout, flush=True)

    def error(self, text: str) -> None:
        print(f"{PROG}: error: {redact_text(text, self._key)}", file=sys.stderr)


class _ApiClient:
    """Blocking client for the session commands of the Scrappey API."""

    def __init__(self, api_url: str, key: str, timeout: float) -> None:
        self.api_url = api_url
        self._key = key
        self._timeout = timeout
        self._http = requests.Session()

    def call(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST one command; _CliError if the API is unusable, _ApiError if it said no."""
        return self._body(self._send("POST", self.api_url, json=payload))

    def balance(self) -> float:
        """GET the key's balance; _CliError if there is no usable answer."""
        response = self._send("GET", self.api_url + "/balance")
        try:
            return parse_balance(response.status_code, response.content, key=self._key)
        except ScrappeyAuthError:
            raise _CliError(AUTH_MESSAGE) from None
        except ScrappeyAPIError as exc:
            raise _CliError(
                f"cannot read the balance at {redact_url(self.api_url)}: "
                f"{redact_text(str(exc), self._key)}"
            ) from None

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return self._http.request(
                method,
                url,
                params={"key": self._key},
                timeout=self._timeout,
                allow_redirects=False,
                **kwargs,
            )
        except requests.exceptions.ReadTimeout:
            # The command may still have run; only this call is in doubt.
            raise _ApiError(f"no reply within {self._timeout:g} s") from None
        except requests.RequestException as exc:
            raise _CliError(self._unreachable(exc)) from None

    @property
    def key_hint(self) -> str:
        return key_hint(self._key)

    def close(self) -> None:
        self._http.close()

    def _unreachable(self, exc: requests.RequestException) -> str:
        text = redact_text(str(exc), self._key)
        match = _ERRNO_RE.search(text)
        reason = match.group(0).strip() if match else text
        # The reason goes last, in brackets: text right after a redacted URL
        # would be taken for part of the key when the message is redacted again.
        return f"cannot reach the Scrappey API at {redact_url(self.api_url)} ({reason})"

    def _body(self, response: requests.Response) -> dict[str, Any]:
        # The same reading of replies as the crawl's client.
        try:
            reply = parse_reply(response.status_code, response.content, key=self._key)
            reply.raise_for_error()
        except ScrappeyAuthError:
            raise _CliError(AUTH_MESSAGE) from None
        except ScrappeyAPIError as exc:
            raise _ApiError(redact_text(str(exc), self._key), exc.kind) from None
        except ScrappeyTransportError as exc:
            raise _ApiError(redact_text(str(exc), self._key)) from None
        return reply.data


def _iso(epoch_ms: object) -> str:
    if not isinstance(epoch_ms, (int, float)) or isinstance(epoch_ms, bool):
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_listing(client: _ApiClient) -> tuple[dict[str, str], str, str]:
    """Open sessions as {id: last accessed}, plus the open count and the limit."""
    try:
        body = client.call({"cmd": "sessions.list"})
    except _ApiError as exc:
        raise _CliError(f"sessions.list failed: {exc}") from None
    sessions: dict[str, str] = {}
    for item in body.get("sessions") or []:
        if isinstance(item, dict) and isinstance(item.get("session"), str):
            sessions[item["session"]] = _iso(item.get("lastAccessed"))
        elif isinstance(item, str):
            sessions[item] = "-"
    open_count = body.get("open", len(sessions))
    return sessions, str(open_count), str(body.get("limit", "?"))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in [header, *rows]
    ]


def _session_rows(
    api: dict[str, str], ledger: dict[str, bool], workers: Workers
) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for session_id in dict.fromkeys([*api, *ledger, *workers.owners]):
        found = (
            ("api", session_id in api),
            ("ledger", session_id in ledger),
            ("redis", session_id in workers.owners),
        )
        source = "+".join(n for n, yes in found if yes)
        state = "-"
        if session_id in ledger:
            state = "live run" if ledger[session_id] else "orphan (run dead)"
        last = api.get(session_id, "-")
        rows.append((session_id, source, state, last, workers.of(session_id)))
    return rows


def _cmd_list(ctx: _Context) -> int:
    api, open_count, limit = _api_listing(ctx.client)
    ctx.out.line(
        f"Scrappey API {redact_url(ctx.client.api_url)}, key {ctx.client.key_hint}"
    )
    known = {entry.session_id: live for entry, live in ctx.ledger.inspect()}
    rows = _session_rows(api, known, Workers.read(ctx.redis))
    if rows:
        header = ("SESSION", "SOURCE", "STATE", "LAST ACCESSED", "WORKER")
        for line in _table(header, rows):
            ctx.out.line(line)
    else:
        ctx.out.line("No open sessions.")
    ctx.out.line(f"open {open_count} of limit {limit}")
    orphans = sum(1 for live in known.values() if not live)
    if orphans:
        ctx.out.line(
            f"{orphans} orphaned session(s); `{PROG} sessions cleanup` destroys them"
        )
    return 0


def _destroy(client: _ApiClient, session_id: str) -> tuple[str, str]:
    """Destroy one session: (outcome, reason), outcome one of destroyed/already gone/failed."""
    try:
        client.call({"cmd": "sessions.destroy", "session": session_id})
    except _ApiError as exc:
        if exc.kind is ErrorKind.SESSION:  # e.g. "session not found"
            return "already gone", ""
        return "failed", str(exc)
    return "destroyed", ""


def _destroy_each(
    ctx: _Context, outcomes: Counter[str], session_ids: list[str]
) -> list[str]:
    """Destroy one session after the other, printing each outcome; those gone."""
    gone = []
    for session_id in session_ids:
        outcome, reason = _destroy(ctx.client, session_id)
        outcomes[outcome] += 1
        if outcome != "failed":
            gone.append(session_id)
        ctx.out.line(f"{outcome:<12}  {session_id}" + (f": {reason}" if reason else ""))
    return gone


def _cmd_cleanup(ctx: _Context, everything: bool) -> int:
    # Listing first checks the key and the connection before any ledger file
    # is claimed, and shows what a plain cleanup leaves alone.
    listed = _api_listing(ctx.client)[0]
    outcomes: Counter[str] = Counter()
    sweeps: list[Sweep] = []

    def sweep_with(taken: list[str]) -> frozenset[str]:
        # One destroy per id, whether a dead run's ledger or Redis names it.
        also = [*taken, *(listed if everything else ())]
        destroy = partial(_destroy_each, ctx, outcomes)
        sweeps.append(destroy_orphans_blocking(ctx.ledger, destroy, also=also))
        return sweeps[-1].gone

    if ctx.redis is None:
        sweep_with([])
    else:
        taken = reap_dead_workers(ctx.redis, sweep_with)
        if taken:
            workers = ", ".join(sorted(set(taken.values())))
            ctx.out.line(
                f"{len(taken)} session(s) of dead worker(s) {workers} in Redis"
            )
    sweep = sweeps[0]
    if sweep.targets:
        ctx.out.line(
            f"{outcomes['destroyed']} destroyed, {outcomes['already gone']} already gone, "
            f"{outcomes['failed']} failed (of {len(sweep.targets)})"
        )
    else:
        what = "open sessions" if everything else "sessions left by dead runs"
        ctx.out.line(f"Nothing to clean up: no {what}.")
    untouched = [sid for sid in listed if sid not in sweep.targets]
    if untouched and not everything:
        ctx.out.line(
            f"{len(untouched)} other open session(s) left alone (running crawls, or "
            f"not recorded in {ctx.ledger.directory}); "
            f"`{PROG} sessions cleanup --all --yes` destroys them too"
        )
    return 1 if sweep.failed else 0


def _project_settings() -> Settings:
    """The settings of the Scrapy project around the current directory, if any."""
    if not inside_project():
        return Settings()
    try:
        return get_project_settings()
    except Exception as exc:  # noqa: BLE001 - a broken project must not block a cleanup
        # Only the type: the message may quote a settings line holding the key.
        print(
            f"{PROG}: warning: ignoring the project settings ({type(exc).__name__})",
            file=sys.stderr,
        )
        return Settings()


def _account(parsers: Parsers, args: argparse.Namespace) -> Account:
    """The API URL, key and ledger a crawl here would use, options first."""
    settings = _project_settings()
    options = {
        "SCRAPPEY_API_KEY": args.key,
        "SCRAPPEY_API_URL": args.api_url,
        "SCRAPPEY_LEDGER_DIR": args.ledger_dir,
    }
    for name, value in options.items():
        if value:
            settings.set(name, value, priority="cmdline")
    try:
        return Account.from_settings(settings, missing_key_advice="or pass --key")
    except ScrappeyConfigError as exc:
        parsers.actions[args.action].error(str(exc))


def _cmd_balance(client: _ApiClient, out: _Output) -> int:
    try:
        balance = client.balance()
    except _ApiError as exc:
        raise _CliError(f"cannot read the balance: {exc}") from None
    out.line(str(balance))
    return 0


def _run(args: argparse.Namespace, account: Account) -> int:
    out = _Output(account.api_key)
    client = _ApiClient(account.api_url, account.api_key, args.timeout)
    try:
        if args.action == "balance":  # no ledger involved
            return _cmd_balance(client, out)
        ledger = SessionLedger(
            account.ledger_dir, api_url=account.api_url, api_key=account.api_key
        )
        try:
            ctx = _Context(client, ledger, out, redis_link(args, account.api_key))
            if args.action == "list":
                return _cmd_list(ctx)
            return _cmd_cleanup(ctx, args.all)
        finally:
            ledger.close()
    except (_CliError, RedisFailed) as exc:
        out.error(str(exc))
        return getattr(exc, "exit_code", 1)
    except OSError as exc:
        # API failures never get here (_ApiClient turns them into _CliError),
        # so this is the ledger directory: missing permissions, full disk.
        out.error(f"cannot use the session ledger: {exc}")
        return 1
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status instead of exiting."""
    parsers = build_parsers()
    try:
        args = parsers.main.parse_args(argv)
        check_args(parsers, args)
        check_redis(parsers, args)
        account = _account(parsers, args)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    return _run(args, account)
