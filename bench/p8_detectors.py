"""P8: time the built-in ban detectors take per response.

Runs every built-in detector (the default ``SCRAPPEY_BAN_DETECTORS``) the way
the session check does, one shared page view per response, on pages built
here: 100 KB pages that are normal but carry vendor presence (the common
case; an ordinary status, so only headers are read), the same pages under
403 (the worst case: a 64 KiB prefix lower-cased and scanned, nothing found),
a 12 KB page under 200 (small enough to be read whole) and vendor block
pages (found). Median and p99 of single calls, timed with perf_counter_ns.
"""

from __future__ import annotations

import statistics
import time

from scrapy import Request
from scrapy.http import HtmlResponse

from bench.common import Row, emit, quick_flag
from scrapy_scrappey.bans import detect

TARGET_US = 50.0
_PRESENCE = {
    "Server": "cloudflare",
    "CF-Ray": "8f1a2b3c4d5e6f72-LHR",
    "Set-Cookie": ["__cf_bm=abc; path=/", "_abck=def~-1~; path=/", "_px3=x; path=/"],
    "Content-Type": "text/html; charset=utf-8",
}
_HEAD = (
    "<!DOCTYPE html><html><head><title>Catalogue</title>"
    '<script src="/cdn-cgi/challenge-platform/scripts/jsd/main.js"></script>'
    '<script src="https://js.datadome.co/tags.js" async></script>'
    "<script>window._pxAppId = 'PXa1b2c3d4';</script></head><body>"
)


def _normal(size: int) -> bytes:
    cards, i = [_HEAD], 0
    while sum(map(len, cards)) < size:
        cards.append(
            f'<article class="card"><h2><a href="/p/{i}">Product {i}</a></h2>'
            f"<p>Item {i}: in stock, ships in two days; reviews below.</p>"
            f'<span class="price">{i % 97}.99</span></article>\n'
        )
        i += 1
    return ("".join(cards) + "</body></html>").encode()


_BLOCKS = {
    "cloudflare": (
        403,
        {"cf-mitigated": "challenge"},
        b"<title>Just a moment...</title>",
    ),
    "akamai": (
        200,
        {},
        (
            b"<html><head><title>Access Denied</title></head><body><h1>Access Denied</h1>"
            b"Reference #18.5f3d1402.1700000001.1a2b3c4e</body></html>"
        ),
    ),
    "imperva": (
        200,
        {},
        (
            b'<html><body><iframe id="main-iframe" src="/_Incapsula_Resource?incident_id=1">'
            b"Request unsuccessful. Incapsula incident ID: 1</iframe></body></html>"
        ),
    ),
    "f5": (
        200,
        {},
        (
            b"<html><head><title>Request Rejected</title></head><body>The requested URL "
            b"was rejected. Please consult with your administrator.<br><br>Your support "
            b"ID is: 1234567890</body></html>"
        ),
    ),
}


def _response(status: int, headers: dict, body: bytes) -> HtmlResponse:
    url = "https://shop.example/p/1"
    return HtmlResponse(
        url, status=status, headers=headers, body=body, request=Request(url)
    )


def _time(responses: list[HtmlResponse], rounds: int) -> tuple[float, float]:
    """Median and p99 of one detector run, in microseconds."""
    times = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for response in responses:
            t0 = clock()
            detect(response)
            times.append(clock() - t0)
    times.sort()
    return statistics.median(times) / 1000, times[int(len(times) * 0.99)] / 1000


def _cases() -> dict[str, tuple[list[HtmlResponse], bool]]:
    """Name: (responses, whether the P8 target applies)."""
    big = _normal(100_000)
    return {
        "100 KB normal pages, 200 (vendor presence)": (
            [_response(200, _PRESENCE, big)],
            True,
        ),
        "100 KB normal pages, 403 (64 KiB scanned, worst case)": (
            [_response(403, _PRESENCE, big)],
            False,
        ),
        "12 KB normal pages, 200 (read whole)": (
            [_response(200, _PRESENCE, _normal(12_000))],
            False,
        ),
        "block pages of 4 vendors (found)": (
            [_response(*page) for page in _BLOCKS.values()],
            False,
        ),
    }


def _verdicts(cases: dict[str, tuple[list[HtmlResponse], bool]]) -> Row:
    """A correctness check: the block pages are found, the normal pages are not."""
    *normal, (blocks, _) = cases.values()
    found = [detect(r) for r in blocks]
    flagged = [detect(r) for responses, _ in normal for r in responses]
    hits = sum(f == v for f, v in zip(found, _BLOCKS, strict=True))
    return Row(
        "P8 detectors",
        "block pages found / normal pages flagged",
        f"{hits}/{sum(map(bool, flagged))}",
        baseline=f"{len(_BLOCKS)}/0",
        check=found == list(_BLOCKS) and not any(flagged),
    )


def main() -> list[Row]:
    rounds = 200 if quick_flag() else 2000
    cases = _cases()
    rows = []
    for name, (responses, targeted) in cases.items():
        median, p99 = _time(responses, rounds)
        rows.append(
            Row(
                "P8 detectors",
                f"{name}: median",
                round(median, 1),
                "us",
                target=f"<= {TARGET_US:g} us" if targeted else "",
                ok=median <= TARGET_US if targeted else None,
            )
        )
        rows.append(Row("P8 detectors", f"{name}: p99", round(p99, 1), "us"))
    return [*rows, _verdicts(cases)]


if __name__ == "__main__":
    emit(main())
