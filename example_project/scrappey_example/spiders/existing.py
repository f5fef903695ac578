"""``existing``: a spider that already called the Scrappey API by hand.

This is how a project written before the middleware talks to Scrappey: it
builds the API commands itself, POSTs them to the API URL and parses the
JSON reply. Such "raw mode" requests still work unchanged once the
middleware is enabled, and they gain sessions:

* the middleware adds the API key, so it no longer lives in the URL;
* every ``request.*`` command without a ``"session"`` is sent in a session
  the middleware creates, shares and destroys at the end of the crawl, so
  the login cookie survives from one command to the next. Before, the
  spider had to call ``sessions.create`` / ``sessions.destroy`` and pass the
  session id around itself, or lose the login after the first command.

The spider code itself knows nothing about sessions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin

from scrapy import Selector
from scrapy.exceptions import CloseSpider
from scrapy.http import JsonRequest

from ..demosite import DEMO_PASSWORD, DEMO_USER, DemoSpider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from scrapy.http import TextResponse


class ExistingSpider(DemoSpider):
    name = "existing"
    custom_settings = {
        # Every request of this spider goes to the API URL, so Scrapy would
        # check the API host's robots.txt rather than the target site's.
        "ROBOTSTXT_OBEY": False,
    }

    user = DEMO_USER
    password = DEMO_PASSWORD

    def domains(self) -> list[str]:
        return []  # requests go to the API host, never to the site directly

    def scrappey(
        self, cmd: str, url: str, callback: Callable[..., Any], **params: Any
    ) -> JsonRequest:
        """One Scrappey API command (the middleware adds the key)."""
        return JsonRequest(
            self.settings["SCRAPPEY_API_URL"],
            data={"cmd": cmd, "url": url, **params},
            callback=callback,
        )

    async def start(self) -> AsyncIterator[JsonRequest]:
        form = urlencode({"user": self.user, "password": self.password})
        yield self.scrappey(
            "request.post", f"{self.site}/login", self.parse_members, postData=form
        )

    def parse_members(self, response: TextResponse) -> Iterator[Any]:
        data = response.json()
        if data.get("data") != "success":
            self.logger.error("Scrappey error: %s", data.get("error"))
            return
        solution = data["solution"]
        page = Selector(text=solution["response"])
        if not page.css("p.welcome"):
            # Redirected to the login form: the cookie of the login was lost.
            self.logger.error("Not logged in at %s", solution["currentUrl"])
            raise CloseSpider("not_logged_in")
        for note in page.css("li.note::text").getall():
            yield {
                "note": note,
                "url": solution["currentUrl"],
                # Scrappey echoes the session a command ran in.
                "session": data.get("session"),
            }
        next_page = page.css("a.next::attr(href)").get()
        if next_page:
            url = urljoin(solution["currentUrl"], next_page)
            yield self.scrappey("request.get", url, self.parse_members)
