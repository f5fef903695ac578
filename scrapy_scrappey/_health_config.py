"""Reading the session-health settings (init steps, checks) for config.py."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from scrapy import Request

from ._settings import require_json
from .exceptions import ScrappeyConfigError
from .payload import METHOD_COMMANDS

#: What an init step may be: Scrappey request parameters, or a Scrapy request.
InitStep = dict[str, Any] | Request

_STEP_COMMANDS = frozenset(METHOD_COMMANDS.values())


def init_steps(value: object, where: str) -> tuple[InitStep, ...]:
    """The steps of ``SCRAPPEY_SESSION_INIT`` (or the spider attribute), checked.

    A dict step gets ``cmd`` (default ``request.get``); the plugin adds
    ``session``. A JSON list (from ``-s``) is accepted too.
    """
    if value is None:
        return ()
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:  # -s SCRAPPEY_SESSION_INIT='[{"url": …}]'
            value = json.loads(value)
        except ValueError as ex:
            raise ScrappeyConfigError(f"{where} is not valid JSON: {ex}.") from ex
    if not isinstance(value, (list, tuple)):
        raise ScrappeyConfigError(
            f"{where} must be a list of steps (dicts of Scrappey request "
            f"parameters or scrapy.Request objects), got {value!r:.100}."
        )
    return tuple(_step(step, f"{where}[{i}]") for i, step in enumerate(value))


def _step(step: object, where: str) -> InitStep:
    if isinstance(step, Request):
        if step.method.upper() not in METHOD_COMMANDS:
            raise ScrappeyConfigError(
                f"{where}: Scrappey has no command for the {step.method} method."
            )
        return step
    if not isinstance(step, Mapping):
        raise ScrappeyConfigError(
            f"{where} must be a dict of Scrappey request parameters or a "
            f"scrapy.Request, got {step!r:.100}."
        )
    params = {"cmd": "request.get", **step}
    if params["cmd"] not in _STEP_COMMANDS:
        raise ScrappeyConfigError(
            f"{where} has the unknown cmd {params['cmd']!r:.60}; an init step "
            f"sends one of {', '.join(sorted(_STEP_COMMANDS))}."
        )
    url = params.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ScrappeyConfigError(
            f"{where} needs a 'url' (an absolute http(s) URL), got {url!r:.100}."
        )
    if "session" in params:
        raise ScrappeyConfigError(
            f"{where} sets 'session'; the plugin adds the session being initialised."
        )
    return require_json(params, where)


def ban_statuses(value: object, where: str) -> frozenset[int]:
    """``SCRAPPEY_SESSION_BAN_STATUSES``: HTTP status codes of the target."""
    if value is None or value == "":
        return frozenset()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ScrappeyConfigError(
            f"{where} must be a list of HTTP status codes, got {value!r:.100}."
        )
    statuses: set[int] = set()
    for item in value:
        try:
            if isinstance(item, bool):
                raise TypeError
            status = int(item)
        except (TypeError, ValueError):
            status = 0
        if not 100 <= status <= 599:
            raise ScrappeyConfigError(
                f"{where} must hold HTTP status codes (100-599), got {item!r:.40}."
            )
        statuses.add(status)
    return frozenset(statuses)


def checker_path(value: object, where: str) -> str | type | None:
    """``SCRAPPEY_SESSION_CHECKER``: an import path (or the class), or None."""
    if value is None or value == "":
        return None
    if not isinstance(value, (str, type)):
        raise ScrappeyConfigError(
            f"{where} must be the import path of a class, got {value!r:.100}."
        )
    return value
