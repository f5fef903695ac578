"""The API client: what it sends and how it treats the HTTP answer."""

from __future__ import annotations

import pytest
from aiohttp import web
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey import ScrappeyTransportError
from scrapy_scrappey.client import ScrappeyClient, parse_reply

KEY = "CLIENTKEY-0123456789"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@deferred_f_from_coro_f
async def test_a_redirect_of_the_api_is_a_transport_error_not_followed(status):
    moved: list[str] = []

    async def api(request: web.Request) -> web.Response:
        return web.Response(
            status=status,
            headers={"Location": "/moved"},
            text='{"data": "success"}',
            content_type="application/json",
        )

    async def elsewhere(request: web.Request) -> web.Response:
        moved.append(request.query_string)
        return web.json_response({"data": "success", "session": "stolen"})

    app = web.Application()
    app.router.add_post("/api/v1", api)
    app.router.add_route("*", "/moved", elsewhere)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    client = ScrappeyClient(f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1", KEY)
    try:
        with pytest.raises(ScrappeyTransportError) as info:
            await client.call({"cmd": "sessions.create"}, timeout=5)
    finally:
        await client.close()
        await runner.cleanup()
    assert moved == []  # the command, key included, went nowhere else
    assert f"HTTP {status}" in str(info.value)
    assert "SCRAPPEY_API_URL" in str(info.value)
    assert isinstance(info.value, OSError)  # RetryMiddleware retries it


def test_parse_reply_refuses_redirects_whatever_the_body():
    with pytest.raises(ScrappeyTransportError, match="SCRAPPEY_API_URL"):
        parse_reply(302, b'{"data": "success", "session": "x"}')
