"""What a Scrappey reply becomes (a retry, an error, a raw response), apart from the hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.downloadermiddlewares.retry import get_retry_request

from ._lifecycle import CrawlLifecycle, spider_of
from ._redact import redact_url
from .codes import ErrorKind
from .responses import raw_response

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.http import Response

    from .client import ApiReply
    from .exceptions import ScrappeyAPIError
    from .routing import Route
    from .sessions import Session

_RETRYABLE = (
    ErrorKind.TRANSIENT,
    ErrorKind.SESSION,
    ErrorKind.SESSION_BOUND,
    ErrorKind.SESSION_LIMIT,
    ErrorKind.BAD_REPLY,
    ErrorKind.UNVERIFIED,
)


class ReplyOutcomes(CrawlLifecycle):
    """Mixin of :class:`~scrapy_scrappey.ScrappeyMiddleware`: API errors to retries."""

    def _on_api_error(self, request: Request, error: ScrappeyAPIError) -> Request:
        if error.kind in _RETRYABLE:
            return self._retry(
                request, f"scrappey/{error.code or error.kind.value}", error
            )
        raise error

    def _retry(self, request: Request, reason: str, error: Exception) -> Request:
        if request.meta.get("dont_retry", False):
            raise error
        spider = spider_of(self.crawler)
        assert spider is not None  # requests only flow while the spider is open
        retry = get_retry_request(request, spider=spider, reason=reason)
        if retry is None:
            raise error
        return retry

    def _raw_reply(
        self,
        request: Request,
        route: Route,
        session: Session | None,
        reply: ApiReply,
        error: ScrappeyAPIError | None,
    ) -> Request | Response:
        """Raw mode hands the API's JSON back, except for what only we can fix."""
        if error is not None and session is not None:
            if error.kind is ErrorKind.SESSION:
                return self._retry(request, "scrappey/session_gone", error)
            if error.kind is ErrorKind.SESSION_BOUND and session.retired:
                return self._retry(request, "scrappey/session_retired", error)
        record_session(request, route, session)
        self._inc(f"scrappey/responses/status/{reply.status}")
        response = raw_response(
            reply.body,
            status=reply.status,
            request=request,
            url=redact_url(request.url),
        )
        self._throttle.downloaded(request, response)
        return response


def record_session(request: Request, route: Route, session: Session | None) -> None:
    """The session used, for the response's meta; ``None`` when it went without one."""
    used = session.id if session is not None else route.params.get("session")
    request.meta["scrappey_session"] = used if isinstance(used, str) else None
