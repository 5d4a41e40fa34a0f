"""A bare ASGI HTTP echo: reads the body, answers a constant JSON. The floor of any Python HTTP server.

uvicorn benchmarks.apps.echo:app --port 9001
"""


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"18")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"predictions":[]}'})
