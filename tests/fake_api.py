"""A scripted Scrappey API on 127.0.0.1 for tests of how replies are read.

``sessions.create`` / ``sessions.destroy`` are answered properly (and the open
sessions counted); every ``request.*`` command gets the reply scripted for its
``url``: an HTTP status and raw bytes, so tests can send anything at all.
:class:`OutcomeSpider` records what became of each request.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from typing_extensions import Self

from tests.crawl import PagesSpider

#: A documented success, as the official mock shapes it.
PAGE_BODY = "<html><body><p id='n'>page</p></body></html>"


def success(url: str, **solution: Any) -> dict[str, Any]:
    """A well-formed ``request.*`` success for *url*; *solution* overrides fields."""
    return {
        "data": "success",
        "solution": {
            "verified": True,
            "statusCode": 200,
            "currentUrl": url,
            "response": PAGE_BODY,
            "responseHeaders": {"content-type": "text/html; charset=utf-8"},
            "cookies": [],
            **solution,
        },
        "timeElapsed": 5,
    }


class ScriptedApi:
    """``async with ScriptedApi() as api: api.script[url] = (200, b"{...}")``.

    Unscripted URLs get :func:`success`. ``elsewhere`` lists the paths other
    than the API's that were called (a client that followed a redirect).
    """

    def __init__(self) -> None:
        self.script: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        #: Replies for the first ``sessions.create`` calls (then a success);
        #: the session is made either way, as an API that answered badly may.
        self.create_replies: list[dict[str, Any]] = []
        #: Replies for the first ``sessions.destroy`` calls (then a success).
        self.destroy_replies: list[dict[str, Any]] = []
        self.open_sessions: set[str] = set()
        self.created = 0
        self.elsewhere: list[str] = []
        #: The answer of ``GET /api/v1/balance`` (status, body): a 404 by default,
        #: as if the endpoint did not exist.
        self.balance_reply: tuple[int, bytes] = (404, b'{"detail": "Not Found"}')
        self.balance_calls = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def answer(
        self, url: str, status: int, body: bytes | dict[str, Any], **headers: str
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.script[url] = (status, raw, headers)

    async def __aenter__(self) -> Self:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/api/v1", self._api)
        app.router.add_get("/api/v1/balance", self._balance)
        app.router.add_route("*", "/{tail:.*}", self._elsewhere)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _api(self, request: web.Request) -> web.StreamResponse:
        command = await request.json()
        cmd = command.get("cmd")
        if cmd == "sessions.create":
            self.open_sessions.add(command["session"])
            self.created += 1
            if self.create_replies:
                return web.json_response(self.create_replies.pop(0))
            return web.json_response({"data": "success", "session": command["session"]})
        if cmd == "sessions.destroy":
            if self.destroy_replies:
                return web.json_response(self.destroy_replies.pop(0))
            self.open_sessions.discard(command["session"])
            return web.json_response({"data": "success"})
        url = command.get("url", "")
        if url not in self.script:
            return web.json_response(success(url))
        status, body, headers = self.script[url]
        return web.Response(
            status=status, body=body, headers=headers, content_type="application/json"
        )

    async def _balance(self, request: web.Request) -> web.Response:
        self.balance_calls += 1
        status, body = self.balance_reply
        return web.Response(status=status, body=body, content_type="application/json")

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self.elsewhere.append(request.path)
        return web.json_response(success("http://127.0.0.1/elsewhere"))


class OutcomeSpider(PagesSpider):
    """Records each request's outcomes (responses, errback exceptions) by URL.

    Items hold the URL and status only, not the page.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outcomes: dict[str, list[Any]] = {}

    def parse(self, response):  # type: ignore[no-untyped-def]
        self.outcomes.setdefault(response.request.url, []).append(response)
        yield {"url": response.url, "status": response.status}

    def errback(self, failure):  # type: ignore[no-untyped-def]
        self.outcomes.setdefault(failure.request.url, []).append(failure.value)

    def outcome(self, url: str) -> Any:
        """The one outcome of *url* (fails if there were several)."""
        (single,) = self.outcomes[url]
        return single
