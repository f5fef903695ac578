"""Command line: ``python -m scrapy_scrappey.local`` / ``scrappey-local``.

Prints the API URL (``http://127.0.0.1:PORT/api/v1``) as the first line on
stdout, logs to stderr, and stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from scrapy_scrappey.codes import TRANSIENT_CODES
from scrapy_scrappey.local.antibot_pages import VENDORS
from scrapy_scrappey.local.billing import parse_prices
from scrapy_scrappey.local.engine_choice import (
    CHROMIUM_ENV,
    ENGINE_MODES,
    EngineUnavailable,
)
from scrapy_scrappey.local.faults import Faults
from scrapy_scrappey.local.resolve import parse_resolve_args
from scrapy_scrappey.local.server import LocalScrappey

logger = logging.getLogger(__name__)

_EPILOG = """\
session rules: ids come from the client (sessions.create "session") or are
generated (uuid4); creating an open id again succeeds with the same id. A
session idle for --session-ttl seconds expires. Past --max-sessions open
sessions, sessions.create gets CODE-0029. A request naming a session that is
not open gets "Session not found: <id>" (--unknown-session error) or creates
it (--unknown-session create). Faults apply to request.* commands unless
their flag says otherwise. The API key may also come from the
SCRAPPEY_LOCAL_API_KEY environment variable.

The first line on stdout is the API URL (http://127.0.0.1:PORT/api/v1); logs
go to stderr. GET / is a live dashboard. Test harness routes, no key needed
on a loopback bind (elsewhere --api-key is required, and ?key= on them): GET /__local__/stats,
POST /__local__/reset, GET and POST /__local__/faults (a JSON object of fault
fields: latency, error_rate, error_codes, http_502_rate, truncated_rate,
slow_rate, slow_seconds, expire_after_requests, fail_creates, fail_destroys,
over_limit_seconds, ban_after_requests, ban_vendors, seed).

engines: --engine browser renders pages in Chromium (Playwright; pip install
'scrapy-scrappey[browser]', apt-get install chromium), one browser context per
session, and performs browserActions (click, type, wait, wait_for_selector,
execute_js, scroll, goto), cssSelector, innerText, screenshot (with
screenshotWidth/Height) and requestType "request". The http engine accepts
and ignores the browser-only options.
"""


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="scrappey-local",
        description="A local Scrappey-compatible API server.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_server_args(parser)
    _add_static_args(parser)
    _add_fault_args(parser.add_argument_group("fault injection"))
    return parser


def _add_server_args(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add(
        "--port", type=int, default=0, help="port to bind; 0 picks a free one (default)"
    )
    add(
        "--api-key",
        default=os.environ.get("SCRAPPEY_LOCAL_API_KEY"),
        help="the only key accepted (HTTP 401 otherwise); default: any key",
    )
    add(
        "--read-timeout",
        type=float,
        default=30.0,
        help="seconds a client has to send a request's headers, then its body "
        "(default 30)",
    )
    add("--log-level", default="INFO", help="logging level on stderr (default INFO)")
    _add_engine_args(parser)
    _add_session_args(parser)


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--engine",
        choices=ENGINE_MODES,
        default=os.environ.get("SCRAPPEY_LOCAL_ENGINE", "auto"),
        help="http (aiohttp), browser (Chromium via Playwright) or auto: the "
        "browser when it launches, else http (default: $SCRAPPEY_LOCAL_ENGINE "
        "or auto)",
    )
    add(
        "--chromium",
        metavar="PATH",
        default=None,
        help=f"Chromium executable (default: ${CHROMIUM_ENV}, else chromium on PATH)",
    )
    add(
        "--resolve",
        action="append",
        default=[],
        metavar="PATTERN=ADDRESS",
        help="connect to the IP ADDRESS for target hosts matching PATTERN (* and ? "
        "wildcards), keeping the URL's port and Host; repeatable, first match wins",
    )


def _add_session_args(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--session-ttl",
        type=float,
        default=240.0,
        help="idle seconds before a session expires; 0 = never (default 240)",
    )
    add(
        "--max-sessions",
        type=int,
        default=None,
        help="cap on open sessions, then CODE-0029 (default 100; 20 with the "
        "browser engine)",
    )
    add(
        "--unknown-session",
        choices=("error", "create"),
        default="error",
        help="request naming a session that is not open: error (default) or create it",
    )
    add(
        "--balance",
        type=float,
        default=1000.0,
        help="starting balance (default 1000)",
    )
    add(
        "--prices",
        default="",
        metavar="TYPE=PRICE,...",
        help="cost of a successful request.* per solution.type, e.g. "
        "browser=1,request=0.2 (the default); failures cost nothing",
    )


# Shares (0..1) of request.* commands that misbehave.
_RATE_FLAGS: tuple[tuple[str, str], ...] = (
    ("--error-rate", "share (0..1) of request.* answered with an error code"),
    ("--http-502-rate", "share of request.* answered with an HTTP 502 HTML page"),
    ("--truncated-rate", "share of request.* whose JSON reply is cut in half"),
    ("--slow-rate", "share of request.* delayed by --slow-seconds more"),
)
# Counted faults: flag, default, help.
_COUNT_FLAGS: tuple[tuple[str, int | None, str], ...] = (
    ("--expire-after-requests", None, "a session expires after N request.* on it"),
    ("--fail-creates", 0, "the first N sessions.create fail with CODE-0029"),
    ("--fail-destroys", 0, "the first N sessions.destroy fail with CODE-0031"),
    (
        "--ban-after-requests",
        None,
        "later request.* on a session get an anti-bot block page (--ban-vendors)",
    ),
)


def _add_static_args(parser: argparse.ArgumentParser) -> None:
    static = parser.add_mutually_exclusive_group()
    static.add_argument(
        "--static-body",
        metavar="TEXT",
        help="answer every request.* with this HTML, fetch nothing",
    )
    static.add_argument(
        "--static-file",
        metavar="PATH",
        type=Path,
        help="like --static-body, with the content of PATH",
    )


def _add_fault_args(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add(
        "--latency",
        action="append",
        default=[],
        metavar="CMD=SECONDS",
        help="delay before answering CMD (any command); repeatable",
    )
    for flag, text in _RATE_FLAGS:
        add(flag, type=float, default=0.0, metavar="RATE", help=text)
    add(
        "--error-codes",
        default=",".join(TRANSIENT_CODES),
        metavar="CODES",
        help="comma-separated codes for --error-rate (default: the transient ones)",
    )
    add("--slow-seconds", type=float, default=2.0, help="extra delay of slow replies")
    add(
        "--over-limit-seconds",
        type=float,
        default=0.0,
        help="every sessions.create fails with CODE-0029 for the first N seconds",
    )
    for flag, default, text in _COUNT_FLAGS:
        add(flag, type=int, default=default, metavar="N", help=text)
    add(
        "--ban-vendors",
        default=",".join(VENDORS),
        metavar="VENDORS",
        help="comma-separated vendors whose block pages banned sessions get, "
        f"in turn (default: all of {','.join(VENDORS)})",
    )
    add("--seed", type=int, default=None, help="seed of the random fault draws")


def faults_from_args(args: argparse.Namespace) -> Faults:
    """The :class:`Faults` the fault flags describe (``ValueError`` if invalid)."""
    return Faults(
        latency=_parse_latency(args.latency),
        error_rate=args.error_rate,
        error_codes=_split(args.error_codes),
        http_502_rate=args.http_502_rate,
        truncated_rate=args.truncated_rate,
        slow_rate=args.slow_rate,
        slow_seconds=args.slow_seconds,
        expire_after_requests=args.expire_after_requests,
        fail_creates=args.fail_creates,
        fail_destroys=args.fail_destroys,
        over_limit_seconds=args.over_limit_seconds,
        ban_after_requests=args.ban_after_requests,
        ban_vendors=_split(args.ban_vendors),
        seed=args.seed,
    )


def _split(names: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in names.split(",") if name.strip())


def _parse_latency(items: list[str]) -> dict[str, float]:
    latency: dict[str, float] = {}
    for item in items:
        cmd, sep, seconds = item.partition("=")
        if not sep:
            raise ValueError(f"--latency wants CMD=SECONDS, got {item!r}")
        latency[cmd.strip()] = float(seconds)
    return latency


def _server_from_args(args: argparse.Namespace) -> LocalScrappey:
    static = args.static_body
    if args.static_file is not None:
        static = args.static_file.read_text(encoding="utf-8")
    return LocalScrappey(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        session_ttl=args.session_ttl,
        max_sessions=args.max_sessions,
        unknown_session=args.unknown_session,
        faults=faults_from_args(args),
        static_body=static,
        balance=args.balance,
        prices=parse_prices(args.prices),
        read_timeout=args.read_timeout,
        engine=args.engine,
        chromium=args.chromium,
        resolve=parse_resolve_args(args.resolve),
    )


async def _serve(server: LocalScrappey) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available on Windows; Ctrl+C then ends asyncio.run instead.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stopping.set)
    async with server:
        print(server.url, flush=True)
        await stopping.wait()
        logger.info("Shutting down")


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        server = _server_from_args(args)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve(server))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        logger.error("Cannot serve on %s:%s: %s", args.host, args.port, exc)
        return 1
    except EngineUnavailable as exc:
        logger.error("--engine browser: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
