"""The prediction caches: keys, the in-process LRU, the Redis circuit breaker."""

from __future__ import annotations

import asyncio

import numpy as np

from prodml.serve.cache import CircuitBreaker, LRUCache, cache_key


def test_cache_key_depends_on_version_and_values() -> None:
    feeds = {"a": np.array([[1.0]], np.float32), "p": np.array([["x"]], dtype=object)}
    assert cache_key("1", feeds) == cache_key("1", {k: v.copy() for k, v in feeds.items()})
    assert cache_key("1", feeds) != cache_key("2", feeds)
    assert cache_key("1", feeds) != cache_key("1", {**feeds, "p": np.array([["y"]], dtype=object)})
    joined = {"p": np.array([["a\x1fb"], ["c"]], dtype=object)}  # texts are length-prefixed, not joined
    assert cache_key("1", joined) != cache_key("1", {"p": np.array([["a"], ["b\x1fc"]], dtype=object)})


def test_lru_evicts_and_expires() -> None:
    async def scenario() -> None:
        cache = LRUCache(max_items=2, ttl_s=60)
        for k in "abc":
            await cache.set(k, [np.array([ord(k)])])
        assert await cache.get("a") is None
        assert (await cache.get("c"))[0].tolist() == [99]  # type: ignore[index]
        expiring = LRUCache(ttl_s=0.01)
        await expiring.set("k", [np.array([1])])
        await asyncio.sleep(0.02)
        assert await expiring.get("k") is None

    asyncio.run(scenario())


def test_circuit_breaker_opens_after_five_failures_and_probes_after_cooldown() -> None:
    breaker = CircuitBreaker(threshold=5, cooldown_s=0.05)
    for _ in range(4):
        breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    import time

    time.sleep(0.06)
    assert breaker.allow()  # one probe
    assert not breaker.allow()
    breaker.success()
    assert breaker.allow()


def test_a_redis_value_that_cannot_be_decoded_is_a_miss() -> None:
    import redis

    from prodml.serve.cache import RedisCache
    from tests.servers import redis_server

    async def scenario(url: str) -> tuple[object, object]:
        cache = RedisCache(url, timeout_s=1.0)
        redis.Redis.from_url(url).set("prodml:k", b"not an npz")
        missed = await cache.get("k")
        await cache.set("k", [np.array([1.0])])
        found = await cache.get("k")
        await cache.client.aclose()
        return missed, found

    with redis_server() as (url, _):
        missed, found = asyncio.run(scenario(url))
    assert missed is None
    assert found is not None and found[0].tolist() == [1.0]  # type: ignore[index]
