"""REST transport: a plain ASGI app over one route table, on stock uvicorn.

One table of :class:`Route` drives both dispatch and ``/openapi.json``, so no route is declared twice.
Each request is read once (capped in size, and in time by a body read timeout), handed to its endpoint as
a :class:`Call`, and answered with the endpoint's :class:`Reply`; a prodml error becomes its JSON body
``{"error": …, "fields": […]}`` with the status it carries — mapped here, once — and anything else a 500
without a trace. Optional, off by default: an API key for the inference routes, CORS origins.
While the server drains, every response says ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from prodml import __version__
from prodml.core.errors import InvalidInput, NotFound, ProdmlError
from prodml.serve.validation import detailed, short

__all__ = ["Call", "HttpApp", "Reply", "Route", "json_reply"]

logger = logging.getLogger("prodml.serve.access")
JSON = "application/json"
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")  # header-safe: no CR/LF, no '%'


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = JSON


def json_reply(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), headers or {})


def error_reply(exc: ProdmlError) -> Reply:
    body: dict[str, Any] = {"error": detailed(exc)}  # the field errors too: clients may print only this
    if exc.fields:
        body["fields"] = exc.fields
    return json_reply(body, exc.http_status)


@dataclass(frozen=True)
class Call:
    """One request as an endpoint sees it: path parameters, headers (lower-case names), the body."""

    params: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(
                f"the body is not valid JSON: {exc}", fields=[{"field": "body", "error": "invalid JSON"}]
            ) from None


@dataclass(frozen=True)
class Route:
    """``method path`` → ``endpoint``; ``{name}`` in the path is a parameter. ``example``: a POST body
    shown in the OpenAPI document; ``guarded``: needs the API key when one is set."""

    method: str
    path: str
    endpoint: Callable[[Call], Awaitable[Reply]]
    tag: str = "prodml"
    summary: str = ""
    example: dict[str, Any] | None = None
    guarded: bool = False

    def match(self, path: str) -> dict[str, str] | None:
        found = _pattern(self.path).fullmatch(path)
        return None if found is None else found.groupdict()


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _pattern(template: str) -> re.Pattern[str]:
    if template not in _PATTERNS:
        parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, …
        _PATTERNS[template] = re.compile(
            "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
        )
    return _PATTERNS[template]


def header_value(value: str) -> bytes:
    """A response header value: as it is when plain printable ASCII, else percent-encoded (a client's
    request id — OIP's ``id`` may hold any string — or a model name may not be)."""
    if not (value.isascii() and value.isprintable() and "%" not in value):
        value = quote(value, safe=_SAFE)
    return value.encode("ascii")


class HttpApp:
    """The ASGI app of one route table.

    Args:
        routes: the table.
        title: the OpenAPI document's title (None: no ``/openapi.json``).
        max_body_bytes: larger bodies are refused (400) before they are read.
        body_timeout_s: a body that takes longer to arrive is refused (408) and its connection closed.
        draining: whether the server drains (responses then close their connection).
        api_key: when set, ``guarded`` routes need ``X-API-Key`` (or ``Authorization: Bearer``) equal to it.
        cors_origins: origins allowed to call from a browser (``*`` for any); empty: no CORS headers.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        title: str | None,
        max_body_bytes: int,
        body_timeout_s: float,
        draining: Callable[[], bool],
        api_key: str | None = None,
        cors_origins: Sequence[str] = (),
    ) -> None:
        self.routes = list(routes)
        if title is not None:
            document = orjson.dumps(openapi(self.routes, title))
            self.routes.append(Route("GET", "/openapi.json", lambda _: _const(Reply(200, document)), "ops"))
        self.exact = {(r.method, r.path): r for r in self.routes if "{" not in r.path}
        self.limit = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.draining = draining
        self.api_key = api_key
        self.cors = frozenset(cors_origins)

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        route = self.exact.get((method, path))
        if route is not None:
            return route, {}
        allowed = False
        for route in self.routes:
            params = route.match(path)
            if params is not None:
                if route.method == method:
                    return route, params
                allowed = True
        if allowed:
            raise _Refused(405, "method not allowed")
        raise NotFound(f"no route {short(path, 60)!r}", hint="see /openapi.json")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        extra: dict[str, str] = {}
        origin = headers.get("origin")
        if origin is not None and ("*" in self.cors or origin in self.cors):
            extra["access-control-allow-origin"] = "*" if "*" in self.cors else origin
        try:
            if extra and scope["method"] == "OPTIONS":
                reply = Reply(
                    204,
                    b"",
                    {"access-control-allow-methods": "GET, POST", "access-control-allow-headers": "*"},
                )
            else:
                route, params = self.find(scope["method"], scope["path"])
                self.authorize(route, headers)
                body = await self.read(receive, headers) if scope["method"] == "POST" else b""
                reply = await route.endpoint(Call(params, headers, body))
        except _Refused as refused:
            reply = json_reply({"error": refused.message}, refused.status, refused.headers)
        except ProdmlError as exc:
            reply = error_reply(exc)
        except Exception:
            logger.exception("unexpected error")
            reply = json_reply({"error": "internal error"}, 500)
        reply.headers.update(extra)
        if self.draining() or reply.status == 408:
            reply.headers["connection"] = "close"
        wire = [
            (b"content-type", reply.media_type.encode("ascii")),
            (b"content-length", b"%d" % len(reply.body)),
            *((name.encode("ascii"), header_value(value)) for name, value in reply.headers.items()),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": wire})
        await send({"type": "http.response.body", "body": reply.body})

    def authorize(self, route: Route, headers: dict[str, str]) -> None:
        if not (route.guarded and self.api_key):
            return
        given = headers.get("x-api-key") or bearer(headers.get("authorization")) or ""
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.api_key.encode()):
            raise _Refused(401, "a valid API key is required (X-API-Key)", {"www-authenticate": "Bearer"})

    async def read(self, receive: Any, headers: dict[str, str]) -> bytes:
        """The request body, within the size and time limits."""
        declared = headers.get("content-length")
        too_large = InvalidInput(
            f"the body is larger than {self.limit} bytes",
            fields=[{"field": "body", "error": f"at most {self.limit} bytes"}],
        )
        if declared is not None and not (
            declared.isascii() and declared.isdigit() and int(declared) <= self.limit
        ):
            raise too_large
        chunks, size, more = [], 0, True
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return b""
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.limit:
                        raise too_large
                    chunks.append(chunk)
                    more = message.get("more_body", False)
        except TimeoutError:
            raise _Refused(408, f"the body did not arrive within {self.body_timeout_s:g} s") from None
        return b"".join(chunks)


class _Refused(Exception):
    """An HTTP-level refusal that is no prodml error (405, 401, 408)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


async def _const(reply: Reply) -> Reply:
    return Reply(reply.status, reply.body, dict(reply.headers), reply.media_type)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header as RFC 6750 (§2.1) defines it: the scheme
    is case-insensitive, then one or more spaces, then a token68; None for anything else."""
    found = re.fullmatch(r"(?i:bearer) +([A-Za-z0-9\-._~+/]+=*) *", authorization or "")
    return found.group(1) if found else None


def openapi(routes: Sequence[Route], title: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a route table."""
    paths: dict[str, Any] = {}
    for r in routes:
        op: dict[str, Any] = {
            "tags": [r.tag],
            "summary": r.summary,
            "operationId": f"{r.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', r.path.lower()).strip('_')}",
            "parameters": [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in re.findall(r"\{(\w+)\}", r.path)
            ],
            "responses": {"200": {"description": "OK"}, "400": {"description": "bad request"}},
        }
        if r.example is not None:
            op["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": {"type": "object"}, "example": r.example}},
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {"openapi": "3.1.0", "info": {"title": title, "version": __version__}, "paths": paths}
