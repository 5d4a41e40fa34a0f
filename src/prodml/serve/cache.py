"""Prediction cache: an in-process LRU by default, Redis when configured.

Keys are the model version plus a hash of the canonical input (the validated feeds), so a new version
never sees the old one's answers. Redis is guarded: every call times out within 50 ms, and after 5
failures in a row a circuit breaker skips Redis for a cool-down, then lets one call probe it; a
failing cache is a miss, never an error for the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

__all__ = ["Cache", "CircuitBreaker", "LRUCache", "RedisCache", "cache_key"]

logger = logging.getLogger(__name__)


def cache_key(version: str, feeds: dict[str, np.ndarray]) -> str:
    """A stable key for (model version, validated input)."""
    h = hashlib.blake2b(version.encode(), digest_size=20)
    for name in sorted(feeds):
        arr = feeds[name]
        h.update(name.encode())
        h.update(repr(arr.shape).encode())  # tensors: [2, 1, 8] and [1, 2, 8] hold the same bytes
        if arr.dtype == object:
            for value in arr.ravel():  # length-prefixed: ["a\x1fb", "c"] and ["a", "b\x1fc"] differ
                data = str(value).encode()
                h.update(len(data).to_bytes(4, "little"))
                h.update(data)
        else:
            h.update(arr.tobytes())
    return h.hexdigest()


class Cache(Protocol):
    """What the data plane needs from a cache. Values are the output arrays of one request."""

    async def get(self, key: str) -> list[np.ndarray] | None: ...

    async def set(self, key: str, value: list[np.ndarray]) -> None: ...

    async def clear(self) -> int: ...


class LRUCache:
    """In-process LRU with a TTL. Example: ``LRUCache(max_items=10_000, ttl_s=300)``."""

    def __init__(self, *, max_items: int = 10_000, ttl_s: float = 300.0) -> None:
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, tuple[float, list[np.ndarray]]] = OrderedDict()

    async def get(self, key: str) -> list[np.ndarray] | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    async def set(self, key: str, value: list[np.ndarray]) -> None:
        self._items[key] = (time.monotonic() + self.ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    async def clear(self) -> int:
        n = len(self._items)
        self._items.clear()
        return n


class CircuitBreaker:
    """Open after ``threshold`` consecutive failures; after ``cooldown_s`` let one call probe."""

    def __init__(self, *, threshold: int = 5, cooldown_s: float = 5.0) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at >= self.cooldown_s:
            self.opened_at = time.monotonic()  # half-open: one probe per cool-down
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            if self.opened_at is None:
                logger.warning("cache circuit opened after %d failures", self.failures)
            self.opened_at = time.monotonic()


def _encode(value: list[np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, *value, allow_pickle=False)
    return buf.getvalue()


def _decode(blob: bytes) -> list[np.ndarray]:
    import io

    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


class RedisCache:
    """Redis-backed cache with 50 ms timeouts and a circuit breaker; errors become misses.

    Values are stored as ``.npz`` (``allow_pickle=False``): nothing read from Redis is unpickled.
    """

    def __init__(
        self, url: str, *, ttl_s: float = 300.0, timeout_s: float = 0.05, prefix: str = "prodml:"
    ) -> None:
        import redis.asyncio as redis

        self.ttl_s = ttl_s
        self.prefix = prefix
        self.breaker = CircuitBreaker()
        self.timeout_s = timeout_s
        self.client: Any = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=0,
        )

    async def _guard(self, call: Any) -> Any:
        if not self.breaker.allow():
            call.close()  # the coroutine is never awaited
            return None
        try:
            async with asyncio.timeout(self.timeout_s * 1.5):  # a silent peer must not hold the request
                result = await call
        except Exception as exc:
            self.breaker.failure()
            logger.debug("redis cache call failed: %s", exc)
            return None
        self.breaker.success()
        return result

    async def get(self, key: str) -> list[np.ndarray] | None:
        blob = await self._guard(self.client.get(self.prefix + key))
        try:
            return _decode(blob) if blob else None
        except Exception:  # not what this cache writes: a miss, overwritten by the answer
            logger.warning("cache value %s cannot be decoded; treated as a miss", key[:16])
            return None

    async def set(self, key: str, value: list[np.ndarray]) -> None:
        await self._guard(self.client.set(self.prefix + key, _encode(value), px=int(self.ttl_s * 1000)))

    async def clear(self) -> int:
        keys = await self._guard(self.client.keys(self.prefix + "*"))
        if not keys:
            return 0
        await self._guard(self.client.delete(*keys))
        return len(keys)
