"""A deadline for each request body, so a client that stalls mid-upload cannot hold a request
(and its memory) open: 408 and the connection closed once `timeout_s` has passed since the
request's headers, however slowly the bytes trickle in.

It wraps the whole app, outside FastAPI's own error handling: when the deadline passes, the
app is told the client left, whatever it answers to that is dropped, and this answers 408.
(The body's size is bounded by FastAPI's own `max_body_size`, api.py.)
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyDeadline:
    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.timeout_s
        complete = timed_out = responded = False

        async def bounded_receive() -> Message:
            nonlocal complete, timed_out
            if complete or timed_out:  # later calls wait for the client to leave: no deadline on that
                return await receive() if complete else {"type": "http.disconnect"}
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                timed_out = True
                return {"type": "http.disconnect"}
            complete = message["type"] == "http.request" and not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responded
            if timed_out and not responded:
                return  # the app's answer to a client that "left": ours follows
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:
            if not timed_out or responded:
                raise
        if timed_out and not responded:
            await self._timeout(send)

    async def _timeout(self, send: Send) -> None:
        body = json.dumps({"detail": f"the request body did not arrive within {self.timeout_s:g} s "
                                     "(WHATART_REQUEST_BODY_TIMEOUT_S)"}).encode()
        await send({"type": "http.response.start", "status": 408,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
