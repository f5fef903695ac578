"""What the built-in ban detectors read of a response, computed once per response.

Detectors look at headers first; the body is read only as a bounded,
lower-cased prefix, and only when the page could be a vendor's block page:
the status refuses (401, 403, 405, 406, 429, 503; the first 64 KiB are
read) or the body is small (at most 16 KiB, read whole). Vendors' block and
challenge pages are small (DataDome ~1 KB, Akamai and F5 deny pages < 1 KB,
Imperva < 10 KB, Cloudflare's a few KB), so a larger page with an ordinary
status is never scanned: that keeps the cost per response to a few header
lookups, and an article that quotes a block page from ever matching.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.http import Response

#: Statuses a vendor refuses with (the reference's X1 set).
REFUSING_STATUSES = frozenset({401, 403, 405, 406, 429, 503})
#: How much of a page with a refusing status is read.
SCAN_BYTES = 64 * 1024
#: A page with another status is read (whole) only up to this size.
SMALL_BYTES = 16 * 1024
#: A "near-empty" page: medium (English-text) signals may fire on it.
TINY_BYTES = 8 * 1024


class Page:
    """A response as the detectors read it; the body is read on first use."""

    __slots__ = ("_text", "_title", "headers", "refusing", "response", "size", "status")

    def __init__(self, response: Response) -> None:
        self.response = response
        self.status = response.status
        self.refusing = self.status in REFUSING_STATUSES
        self.size = len(response.body)
        #: Lower-cased header names and (last) values.
        self.headers = {
            name.lower(): values[-1].lower()
            for name, values in response.headers.items()
            if values
        }
        self._text: bytes | None = None
        self._title: bytes | None = None

    @property
    def tiny(self) -> bool:
        """Whether the body is near-empty (at most :data:`TINY_BYTES`)."""
        return self.size <= TINY_BYTES

    def header(self, name: bytes) -> bytes:
        """The lower-cased value of header *name* (lower-case), ``b""`` when absent."""
        return self.headers.get(name, b"")

    @property
    def url(self) -> str:
        return self.response.url

    @property
    def text(self) -> bytes:
        """The lower-cased body prefix, ``b""`` for a page that is not read."""
        if self._text is None:
            if self.refusing:
                self._text = self.response.body[:SCAN_BYTES].lower()
            elif self.size <= SMALL_BYTES:
                self._text = self.response.body.lower()
            else:
                self._text = b""
        return self._text

    @property
    def title(self) -> bytes:
        """The stripped, lower-cased ``<title>`` of :attr:`text`, ``b""`` if none."""
        if self._title is None:
            text = self.text
            start = text.find(b"<title")
            start = text.find(b">", start) + 1 if start >= 0 else 0
            end = text.find(b"</title", start) if start else -1
            self._title = b" ".join(text[start:end].split()) if end > 0 else b""
        return self._title

    def has(self, *needles: bytes) -> bool:
        """Whether :attr:`text` contains any of *needles* (lower-case)."""
        text = self.text
        return any(needle in text for needle in needles)
