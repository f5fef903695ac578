"""Keeping the API key out of everything a user can see.

The key travels in the query string (``?key=…``), so any URL, exception text or
log line that touches the API endpoint can carry it. Everything user-visible
goes through these helpers; at most the first four characters survive (never
more than half of the key).

Text the API wrote (error messages, transport errors) is also untrusted: it is
quoted with :func:`api_text`, which escapes control characters (a CR/LF would
forge log lines) and bounds its length.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote, quote_plus

# Stops at "***" so that redacting twice leaves the text alone. Also matches
# the url-encoded "?key=" of a URL nested in another URL's query.
_KEY_PARAM_RE = re.compile(
    r"((?:[?&]|%3F|%26)key(?:=|%3D))(?!\*\*\*)[^&#\s'\"]*", re.IGNORECASE
)
# "key=…", "key: …", '"apiKey": "…"', "api_key%3D…" in free text.
_KEY_FIELD_RE = re.compile(
    r"""(\b(?:api[_-]?)?key["']?\s*(?:[=:]|%3D|%3A)\s*["']?)(?!\*\*\*)[^\s"'&#,;<>]+""",
    re.IGNORECASE,
)
#: How much of a text the API wrote is quoted in errors and logs.
API_TEXT_LIMIT = 300


def key_hint(key: str) -> str:
    """A safe reminder of which key is in use: ``'abcd…'``.

    At most four characters, and never more than half the key, so that a
    short (test or mistyped) key is not shown in full either.
    """
    return f"{key[: min(4, len(key) // 2)]}…" if key else "(none)"


def redact_url(url: str) -> str:
    """Replace the value of any ``key`` query parameter with ``***``."""
    return _KEY_PARAM_RE.sub(r"\1***", url)


def redact_text(text: str, key: str) -> str:
    """Scrub *key* from arbitrary text (exception messages from aiohttp, …).

    Besides ``key=`` parameters, anything that starts like the key (five
    characters or more, also url-encoded) becomes :func:`key_hint`, so a
    truncated or re-encoded copy does not survive either.
    """
    text = redact_url(text)
    if key and len(key) > 4:
        text = _key_re(key).sub(key_hint(key), text)
    return text


def api_text(text: str, key: str = "") -> str:
    """*text* from the API, safe to quote: key redacted, bounded, escaped."""
    text = _KEY_FIELD_RE.sub(r"\1***", redact_text(text, key))
    if len(text) > API_TEXT_LIMIT:
        text = (
            f"{text[:API_TEXT_LIMIT]}… ({len(text) - API_TEXT_LIMIT} more characters)"
        )
    return _printable(text)


def _printable(text: str) -> str:
    """*text* with control, format and lone surrogate characters escaped."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


@functools.lru_cache(maxsize=8)
def _key_re(key: str) -> re.Pattern[str]:
    head = key[:5]
    forms = sorted({head, quote(head, safe=""), quote_plus(head)}, key=len)
    alternatives = "|".join(re.escape(form) for form in reversed(forms))
    return re.compile(rf"(?:{alternatives})[^\s\"'&#<>]*", re.IGNORECASE)
