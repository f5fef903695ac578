"""The API client: what it sends and how it treats the HTTP answer."""

from __future__ import annotations

import pytest
from aiohttp import web
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey import ScrappeyTransportError
from scrapy_scrappey.client import ScrappeyClient, parse_reply
from scrapy_scrappey.codes import ErrorKind
from scrapy_scrappey.exceptions import ScrappeyAPIUnreachable

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


@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        (404, b"<h1>Not Found</h1>", "HTTP 404 with a non-JSON body"),
        (404, b'{"detail": "Not Found"}', 'HTTP 404 ({"detail": "Not Found"})'),
        (404, b'{"data": "error", "error": "Not Found: POST /"}', "Not Found: POST /"),
        (405, b"Method Not Allowed", "HTTP 405 with a non-JSON body"),
    ],
)
def test_a_404_or_405_that_is_no_command_reply_points_at_the_api_url(
    status, body, shown
):
    with pytest.raises(ScrappeyTransportError) as info:
        parse_reply(status, body)
    message = str(info.value)
    assert shown in message
    assert message.endswith("not the API; check SCRAPPEY_API_URL")
    assert "SCRAPPEY_SESSION_PARAMS" not in message


@pytest.mark.parametrize(
    ("error", "kind"),
    [("Session not found: s1", ErrorKind.SESSION), ("CODE-0001", ErrorKind.TRANSIENT)],
)
def test_a_404_carrying_a_command_error_is_that_error(error, kind):
    reply = parse_reply(404, f'{{"data": "error", "error": "{error}"}}'.encode())
    assert reply.error() is not None
    assert reply.error().kind is kind


@deferred_f_from_coro_f
async def test_an_api_url_nothing_listens_on_is_unreachable(free_port):
    url = f"http://127.0.0.1:{free_port}/api/v1"
    client = ScrappeyClient(url, KEY)
    try:
        with pytest.raises(ScrappeyAPIUnreachable) as info:
            await client.call({"cmd": "sessions.create"}, timeout=5)
    finally:
        await client.close()
    assert str(info.value) == (
        f"cannot reach the Scrappey API at {url}: Connection refused; "
        "check SCRAPPEY_API_URL"
    )
    assert isinstance(info.value, OSError)  # RetryMiddleware retries it
    assert not client.reached


@deferred_f_from_coro_f
async def test_reached_once_the_api_answered_even_an_error(local_server):
    wrong = ScrappeyClient(local_server.url.removesuffix("/v1"), KEY)
    right = ScrappeyClient(local_server.url, KEY)
    try:
        with pytest.raises(ScrappeyAPIUnreachable, match="HTTP 404"):
            await wrong.call({"cmd": "sessions.create"}, timeout=5)
        reply = await right.call({"cmd": "sessions.destroy", "session": "x"}, timeout=5)
    finally:
        await wrong.close()
        await right.close()
    assert reply.error() is not None  # "Session not found": an answer all the same
    assert not wrong.reached
    assert right.reached
