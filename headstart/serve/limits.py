"""ASGI middleware refusing request bodies over a size limit, declared or streamed, with a 413."""

from __future__ import annotations

import json

from fastapi import HTTPException


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def message(self) -> str:
        return (f"The request body is larger than {self.max_bytes / 1e6:g} MB (--max-body-mb): send fewer or "
                "smaller inputs per request.")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            body = json.dumps({"detail": self.message()}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body without a length: stop reading it
                    raise HTTPException(413, self.message())
            return message

        await self.app(scope, counted, send)
