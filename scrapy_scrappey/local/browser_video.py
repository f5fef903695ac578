"""``video: true``: what the page showed during a request, served as MJPEG.

Playwright's own recorder needs an ffmpeg build that ``playwright install``
downloads, which this server does without; Chromium's DevTools screencast
needs nothing. Frames (JPEG, one per repaint) are kept in a
:class:`VideoStore` and played back at ``GET /__local__/videos/<id>`` as
``multipart/x-mixed-replace`` (Motion JPEG, which browsers play inline) at
their recorded pace.

Invariants: the store holds at most :data:`MAX_VIDEOS` videos (oldest dropped
first) of at most :data:`MAX_FRAMES` frames each.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from aiohttp import web
from playwright.async_api import Error as PlaywrightError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from playwright.async_api import Page

MAX_VIDEOS = 20
MAX_FRAMES = 600
_BOUNDARY = "frame"
# A long pause between repaints is not worth replaying.
_MAX_GAP = 2.0

Frame = tuple[float, bytes]


class VideoStore:
    """Recorded videos by id."""

    def __init__(self) -> None:
        self._videos: OrderedDict[str, list[Frame]] = OrderedDict()

    def add(self, frames: list[Frame]) -> str:
        """Keep *frames*; return the new video's id."""
        video_id = uuid.uuid4().hex
        self._videos[video_id] = frames
        while len(self._videos) > MAX_VIDEOS:
            self._videos.popitem(last=False)
        return video_id

    def get(self, video_id: str) -> list[Frame] | None:
        """The frames of *video_id*, ``None`` when unknown or dropped."""
        return self._videos.get(video_id)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """``GET /__local__/videos/{id}``: the video as Motion JPEG."""
        frames = self.get(request.match_info["id"])
        if frames is None:
            raise web.HTTPNotFound(text="no such video (only the last 20 are kept)")
        response = web.StreamResponse(
            headers={"Content-Type": f"multipart/x-mixed-replace; boundary={_BOUNDARY}"}
        )
        await response.prepare(request)
        previous = frames[0][0] if frames else 0.0
        for stamp, jpeg in frames:
            await asyncio.sleep(min(max(stamp - previous, 0.0), _MAX_GAP))
            previous = stamp
            head = f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
            head += f"Content-Length: {len(jpeg)}\r\n\r\n"
            await response.write(head.encode("ascii") + jpeg + b"\r\n")
        await response.write(f"--{_BOUNDARY}--\r\n".encode("ascii"))
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def recording(page: Page) -> AsyncIterator[list[Frame]]:
    """Screencast *page* while the block runs; the list fills with frames."""
    frames: list[Frame] = []
    cdp = await page.context.new_cdp_session(page)

    async def on_frame(params: dict[str, Any]) -> None:
        if len(frames) < MAX_FRAMES:
            stamp = float(params.get("metadata", {}).get("timestamp", 0.0))
            frames.append((stamp, base64.b64decode(params["data"])))
        # Chromium sends the next frame only once this one is acknowledged.
        with contextlib.suppress(PlaywrightError):
            await cdp.send(
                "Page.screencastFrameAck", {"sessionId": params["sessionId"]}
            )

    cdp.on("Page.screencastFrame", on_frame)
    await cdp.send("Page.startScreencast", {"format": "jpeg", "quality": 70})
    try:
        yield frames
    finally:
        with contextlib.suppress(PlaywrightError):
            await cdp.send("Page.stopScreencast")
            await cdp.detach()
