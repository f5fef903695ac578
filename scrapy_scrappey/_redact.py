"""Keeping the API key out of everything a user can see.

The key travels in the query string (``?key=…``), so any URL, exception text or
log line that touches the API endpoint can carry it. Everything user-visible
goes through these helpers; at most the first four characters survive.
"""

from __future__ import annotations

import re

# Stops at "***" so that redacting twice leaves the text alone.
_KEY_PARAM_RE = re.compile(r"([?&]key=)(?!\*\*\*)[^&#\s'\"]*", re.IGNORECASE)


def key_hint(key: str) -> str:
    """A safe reminder of which key is in use: ``'abcd…'``."""
    return f"{key[:4]}…" if key else "(none)"


def redact_url(url: str) -> str:
    """Replace the value of any ``key`` query parameter with ``***``."""
    return _KEY_PARAM_RE.sub(r"\1***", url)


def redact_text(text: str, key: str) -> str:
    """Scrub *key* from arbitrary text (exception messages from aiohttp, …)."""
    text = redact_url(text)
    if key and len(key) > 4:
        text = text.replace(key, key_hint(key))
    return text
