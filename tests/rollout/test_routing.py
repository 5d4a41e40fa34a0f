"""Routing by weight: deterministic by key, within ±2 percentage points of the weights."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from prodml.registry.deployment import Deployment, Stickiness, Variant
from prodml.serve.routing import SCALE, Table, bucket
from tests.rollout.conftest import TOKEN, Versions, reset
from tests.servers import ServeProcess


def _table(weights: list[int]) -> Table:
    bounds, total = [], 0
    for w in weights:
        total += w * SCALE // 100
        bounds.append(total)
    names = tuple(f"v{i}" for i in range(len(weights)))
    return Table(1, names, (), tuple(bounds), None, "x-user")


def test_a_key_always_gets_the_same_variant_and_the_split_follows_the_weights() -> None:
    table = _table([50, 50])
    keys = [f"customer-{i}" for i in range(10_000)]
    first = [table.choose(k) for k in keys]
    assert [table.choose(k) for k in keys] == first  # 100% sticky
    share = Counter(first)[1] / len(keys)
    assert abs(share - 0.5) <= 0.02
    canary = _table([90, 10])
    assert abs(Counter(canary.choose(k) for k in keys)[1] / len(keys) - 0.10) <= 0.02
    # raising the canary's weight keeps every key it had (buckets below the bound stay below it)
    wider = _table([75, 25])
    assert all(wider.choose(k) == 1 for k in keys if canary.choose(k) == 1)
    assert bucket("customer-1") == bucket("customer-1") and 0 <= bucket("x") < SCALE


def test_zero_weight_variants_get_nothing_and_keyless_requests_spread() -> None:
    table = _table([100, 0])
    assert {table.choose(f"k{i}") for i in range(2000)} == {0}
    split = Counter(_table([50, 50]).choose(None) for _ in range(4000))
    assert abs(split[0] / 4000 - 0.5) <= 0.05


@pytest.mark.integration
def test_a_replica_restarted_with_the_registry_down_routes_by_the_spec_it_last_applied(
    versions: Versions,
) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    reset(versions)
    store = versions.store()
    spec = store.read()
    split = Deployment(
        revision=0,
        variants=(Variant("a", "1", 50, "primary"), Variant("b", "2", 50, "arm")),
        stickiness=Stickiness(header="x-user"),
    )
    store.write(split, action="set", why="test: a split", expect_revision=spec.revision if spec else None)

    def arms(server: ServeProcess) -> set[str]:
        with httpx.Client(timeout=30) as client:
            return {
                client.post(
                    f"{server.url}/predict",
                    json={"records": [versions.rows[i]]},
                    headers={"x-user": f"user-{i}"},
                ).json()["variant"]
                for i in range(40)
            }

    try:
        with ServeProcess(versions.root, versions.env, "--poll", "1") as server:
            server.wait_ready()
            httpx.post(f"{server.admin_url}/admin/reload", headers=auth, timeout=30).raise_for_status()
            assert arms(server) == {"a", "b"}
        down = {**versions.env, "PRODML_TRACKING_URI": f"sqlite:///{versions.root / 'gone.db'}"}
        with ServeProcess(versions.root, down, "--poll", "1") as server:
            server.wait_ready()  # from the local cache: the champion, and the split it last applied
            assert arms(server) == {"a", "b"}
            status = httpx.get(f"{server.admin_url}/admin/status", headers=auth, timeout=10).json()
            assert status["last_registry_error"] and status["deployment"]["revision"] is not None
    finally:
        reset(versions)


def test_a_header_key_is_found_whatever_the_case_the_spec_gives_its_name() -> None:
    from dataclasses import replace

    from prodml.serve.routing import HEADERS, Router

    table = replace(_table([50, 50]), header=Stickiness(header="X-User").header)  # as the spec names it
    token = HEADERS.set({"x-user": "customer-7"})  # transports lower-case header and metadata names
    try:
        assert Router._key(table, {}) == "customer-7"
    finally:
        HEADERS.reset(token)
