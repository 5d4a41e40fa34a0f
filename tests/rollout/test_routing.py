"""Routing by weight: deterministic by key, within ±2 percentage points of the weights."""

from __future__ import annotations

from collections import Counter

from prodml.serve.routing import SCALE, Table, bucket


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
