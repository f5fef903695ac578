"""The command line's arguments: ``python -m scrapy_scrappey sessions list|cleanup|balance``.

Parsing only; :mod:`scrapy_scrappey.cli` runs the commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ._redact import redact_text
from .config import DEFAULT_API_URL

PROG = "python -m scrapy_scrappey"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors never show the API key."""

    def error(self, message: str) -> NoReturn:
        # Usage errors echo arguments back, and a key may be among them.
        super().error(redact_text(message, os.environ.get("SCRAPPEY_API_KEY", "")))


@dataclass(frozen=True)
class Parsers:
    """The parsers, kept to print the right usage message for an error."""

    main: Parser
    sessions: Parser
    actions: dict[str, Parser]


def _common_options(*, ledger: bool = True) -> Parser:
    common = Parser(add_help=False)
    common.add_argument(
        "--api-url",
        help="API endpoint (default: the SCRAPPEY_API_URL setting of the Scrapy "
        f"project, then $SCRAPPEY_API_URL, then {DEFAULT_API_URL})",
    )
    common.add_argument(
        "--key",
        help="API key (default: the SCRAPPEY_API_KEY setting of the Scrapy "
        "project, then $SCRAPPEY_API_KEY; both are safer than this option, "
        "command lines are visible to other users of the machine)",
    )
    if ledger:
        _add_ledger_dir(common)
        common.add_argument(
            "--redis",
            metavar="URL",
            help="the SCRAPPEY_REDIS_URL of workers sharing this key: list shows "
            "which are alive, cleanup also destroys the sessions of dead ones "
            "(of all of them when none is alive)",
        )
    common.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        help="seconds to wait for each API reply (default: 30)",
    )
    return common


def _add_ledger_dir(parser: Parser) -> None:
    parser.add_argument(
        "--ledger-dir",
        type=Path,
        help="session ledger directory (default: the SCRAPPEY_LEDGER_DIR setting, "
        "then .scrapy/scrappey-sessions of the Scrapy project, or of the current "
        "directory outside a project)",
    )


def build_parsers() -> Parsers:
    main = Parser(prog=PROG, description="Tools for scrapy-scrappey.")
    commands = main.add_subparsers(dest="command", metavar="COMMAND")
    sessions = commands.add_parser(
        "sessions",
        help="list or destroy remote browser sessions",
        description="List or destroy the Scrappey browser sessions of an API key.",
    )
    actions = sessions.add_subparsers(dest="action", metavar="ACTION")
    common = _common_options()
    listing = actions.add_parser(
        "list",
        parents=[common],
        help="show open sessions (API and session ledger)",
        description="Show the sessions the API reports as open and the sessions "
        "recorded in the session ledger.",
    )
    cleanup = actions.add_parser(
        "cleanup",
        parents=[common],
        help="destroy sessions left behind by crashed crawls",
        description="Destroy the sessions recorded by crawls that are no longer "
        "running (with --all --yes: every open session).",
    )
    cleanup.add_argument(
        "--all",
        action="store_true",
        help="destroy every session the API lists, including those of running crawls",
    )
    cleanup.add_argument("--yes", action="store_true", help="confirm --all")
    balance = commands.add_parser(
        "balance",
        parents=[_common_options(ledger=False)],
        help="print the balance of the API key",
        description="Print the balance the API reports for the key "
        "(GET <api-url>/balance).",
    )
    balance.set_defaults(action="balance", ledger_dir=None, redis=None)
    return Parsers(
        main, sessions, {"list": listing, "cleanup": cleanup, "balance": balance}
    )


def check_args(parsers: Parsers, args: argparse.Namespace) -> None:
    """Exit with usage help (status 2) unless *args* make a runnable command."""
    if args.command is None:
        parsers.main.print_help(sys.stderr)
        raise SystemExit(2)
    if args.action is None:
        parsers.sessions.print_help(sys.stderr)
        raise SystemExit(2)
    if args.action == "cleanup" and args.all and not args.yes:
        parsers.actions["cleanup"].error(
            "--all destroys every open session of this key, including those of "
            "running crawls; add --yes to confirm"
        )
