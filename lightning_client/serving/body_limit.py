"""`BodyLimit`: request bodies over the server's limit are refused with 413 before they are parsed or authenticated."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightning_client.serving.errors import ApiError

__all__ = ["BodyLimit"]


class BodyLimit:
    """ASGI middleware: at most `max_bytes` of body per HTTP request, held before the app sees it.

    A declared `Content-Length` over the limit is refused at once; a streamed body is read up to
    the limit and refused as soon as it passes it, so the server never holds more than the limit
    for one request, whatever the caller sends.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                pending: list[Message] = [message]
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
                break

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = ApiError(
            413,
            f"the request body is larger than this server accepts ({self.max_bytes} bytes)",
            type="invalid_request_error",
            code="RequestTooLarge",
            headers={"Connection": "close"},
        )
        await error.response()(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdecimal() and text.isascii() else None
    return None
