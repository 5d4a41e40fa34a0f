"""The online store on real SQLite and real Redis, and the serving step's policies (never a 5xx)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from prodml.core.errors import ConfigError, InvalidInput
from prodml.data import online_store
from prodml.data.online_store import (
    FeaturesUnavailable,
    MissingEntity,
    OnlineFeatures,
    OnlineSpec,
    OnlineStore,
    RedisStore,
    SQLiteStore,
    StoreUnavailable,
    defaults_from_profile,
    online_spec,
    open_store,
)
from tests.servers import redis_server

TABLE = pa.table(
    {
        "customer_id": pa.array([1, 2, 3], pa.int64()),
        "visits_7d": pa.array([3, 0, None], pa.int64()),
        "spend_30d": pa.array([12.5, None, 1e-7], pa.float64()),
        "plan": pa.array(["pro", None, "basic"]),
    }
)
NUMBERS, STRINGS = ["visits_7d", "spend_30d"], ["plan"]
PROFILE = {
    "features": {
        "visits_7d": {"kind": "numeric", "mean": 2.5},
        "spend_30d": {"kind": "numeric", "mean": 7.0},
        "plan": {"kind": "categorical", "frequencies": {"basic": 0.7, "pro": 0.3}},
    }
}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as (url, _):
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        s: OnlineStore = SQLiteStore(tmp_path / "online.sqlite")
    else:
        url = request.getfixturevalue("redis_url")
        s = RedisStore(url, f"test:{request.node.name}", timeout_s=1.0)
    yield s
    s.close()


def _values(store: OnlineStore, keys: list[Any]) -> tuple[list[Any], list[list[Any]], list[bool]]:
    got = store.read(keys, NUMBERS, STRINGS)
    numbers = [[None if np.isnan(v) else float(v) for v in row] for row in got.numbers]
    return numbers, got.strings.tolist(), got.found.tolist()


@pytest.mark.integration
def test_a_batch_reads_back_in_key_order_with_nulls_and_missing_entities(store: OnlineStore) -> None:
    assert store.write(TABLE, "customer_id", as_of=1_700_000_000.0) == 3
    numbers, strings, found = _values(store, [3, "9", 1, 2.0])
    assert found == [True, False, True, True]
    assert numbers == [[None, 1e-7], [None, None], [3.0, 12.5], [0.0, None]]
    assert strings == [["basic"], [None], ["pro"], [None]]
    assert store.keys() == ["1", "2", "3"]


@pytest.mark.integration
def test_rewriting_replaces_whole_rows_and_is_idempotent(store: OnlineStore) -> None:
    store.write(TABLE, "customer_id", as_of=1.0)
    first = _values(store, [1, 2, 3])
    store.write(TABLE, "customer_id", as_of=1.0)
    assert _values(store, [1, 2, 3]) == first
    # a value that became null is null afterwards, not the old value
    changed = TABLE.set_column(3, "plan", pa.array([None, "pro", "basic"]))
    store.write(changed.slice(0, 2), "customer_id", as_of=2.0)
    assert _values(store, [1, 2, 3])[1] == [[None], ["pro"], ["basic"]]


@pytest.mark.integration
def test_metadata_round_trips(store: OnlineStore) -> None:
    assert store.meta() == {}
    store.write(TABLE, "customer_id", as_of=1.0)
    store.set_meta({"as_of": "2025-01-01T00:00:00", "written": 3})
    assert store.meta() == {"as_of": "2025-01-01T00:00:00", "written": 3}


@pytest.mark.integration
def test_redis_rows_expire_after_the_ttl(redis_url: str) -> None:
    store = RedisStore(redis_url, "test:ttl", ttl_s=60, timeout_s=1.0)
    store.write(TABLE, "customer_id", as_of=1.0)
    assert 0 < store.client.ttl(b"test:ttl:1") <= 60
    store.client.expire(b"test:ttl:1", 0)  # what the clock does after 60 s
    assert store.read([1, 2], NUMBERS, STRINGS).found.tolist() == [False, True]
    store.close()


def test_sqlite_rows_older_than_the_ttl_count_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SQLiteStore(tmp_path / "s.sqlite").write(TABLE, "customer_id", as_of=1.0)
    store = SQLiteStore(tmp_path / "s.sqlite", ttl_s=60)
    assert store.read([1], NUMBERS, STRINGS).found.tolist() == [True]
    now = online_store.time.time()
    monkeypatch.setattr(online_store.time, "time", lambda: now + 61)
    assert store.read([1], NUMBERS, STRINGS).found.tolist() == [False]


def test_a_store_not_materialised_yet_is_unavailable_and_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="does not exist yet") as info:
        SQLiteStore(tmp_path / "none.sqlite").read([1], NUMBERS, STRINGS)
    assert "prodml features materialize" in (info.value.hint or "")


def test_a_store_without_a_model_feature_says_so(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite")
    store.write(TABLE, "customer_id", as_of=1.0)
    with pytest.raises(Exception, match="lacks features the model takes: visits_90d") as info:
        store.read([1], ["visits_90d"], [])
    assert info.value.http_status < 500  # type: ignore[attr-defined]


# --- the serving step -------------------------------------------------------------------------------


def _online(store: OnlineStore, **policy: Any) -> OnlineFeatures:
    return OnlineFeatures(
        store,
        entity="customer_id",
        numbers=NUMBERS,
        strings=STRINGS,
        defaults=defaults_from_profile(PROFILE),
        **policy,
    )


def test_defaults_come_from_the_profile() -> None:
    assert defaults_from_profile(PROFILE) == {"visits_7d": 2.5, "spend_30d": 7.0, "plan": "basic"}


@pytest.mark.integration
def test_a_request_with_only_the_key_gets_every_model_input(store: OnlineStore) -> None:
    store.write(TABLE, "customer_id", as_of=1.0)
    online = _online(store)
    request = {"customer_id": [2, 1]}
    assert online.wants(request)
    columns, fetched = online.join(request)
    assert sorted(columns) == ["plan", "spend_30d", "visits_7d"]  # the key is not a model input
    assert columns["visits_7d"].tolist() == [0.0, 3.0]
    assert columns["plan"].tolist() == [None, "pro"]
    assert fetched.rows == 2 and not fetched.missing and not fetched.fallback


@pytest.mark.integration
def test_request_time_features_win_over_the_store(store: OnlineStore) -> None:
    store.write(TABLE, "customer_id", as_of=1.0)
    columns, _ = _online(store).join({"customer_id": [1], "plan": ["enterprise"]})
    assert columns["plan"] == ["enterprise"]
    assert columns["visits_7d"].tolist() == [3.0]
    complete = {"customer_id": [1], "plan": ["a"], "visits_7d": [1], "spend_30d": [1]}
    assert not _online(store).wants(complete)
    absent = SQLiteStore(Path("/nonexistent/online.sqlite"))  # a request that lacks nothing never reads it
    got, _ = _online(absent, unavailable="reject").join(complete)
    assert got == {"plan": ["a"], "visits_7d": [1], "spend_30d": [1]}


@pytest.mark.integration
def test_a_missing_entity_is_a_404_naming_it_or_gets_the_defaults(store: OnlineStore) -> None:
    store.write(TABLE, "customer_id", as_of=1.0)
    with pytest.raises(MissingEntity, match="customer_id 77") as info:
        _online(store).join({"customer_id": [1, 77]})
    assert info.value.http_status == 404
    assert info.value.fields == [{"field": "customer_id", "error": "entity 77 is not in the online store"}]
    columns, fetched = _online(store, missing="defaults").join({"customer_id": [1, 77]})
    assert fetched.missing == ["77"]
    assert columns["visits_7d"].tolist() == [3.0, 2.5]
    assert columns["plan"].tolist() == ["pro", "basic"]


def test_a_null_key_is_a_400_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="null key") as info:
        _online(SQLiteStore(tmp_path / "s.sqlite")).join({"customer_id": [1, None]})
    assert info.value.fields[0]["field"] == "customer_id"


def test_a_store_that_is_down_gets_the_declared_policy_never_a_5xx(tmp_path: Path) -> None:
    down = SQLiteStore(tmp_path / "never-written.sqlite")
    columns, fetched = _online(down).join({"customer_id": [1, 2]})
    assert fetched.fallback
    assert columns["spend_30d"].tolist() == [7.0, 7.0]
    with pytest.raises(FeaturesUnavailable, match="customer_id 1, 2") as info:
        _online(down, unavailable="reject").join({"customer_id": [1, 2]})
    assert info.value.http_status == 424


@pytest.mark.integration
def test_redis_killed_mid_load_falls_back_with_no_error_escaping() -> None:
    with redis_server() as (url, proc):
        store = RedisStore(url, "test:kill", timeout_s=0.05)
        store.write(TABLE, "customer_id", as_of=1.0)
        online = _online(store)
        outcomes: list[bool] = []  # per request: served from the store (False: defaults)
        errors: list[BaseException] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    columns, fetched = online.join({"customer_id": [1, 3]})
                    expected = [2.5, 2.5] if fetched.fallback else [3.0, np.nan]
                    np.testing.assert_array_equal(columns["visits_7d"], expected)
                    outcomes.append(not fetched.fallback)
                except BaseException as exc:  # anything escaping would be a server error
                    errors.append(exc)

        worker = threading.Thread(target=load)
        worker.start()
        try:
            while len(outcomes) < 50:
                threading.Event().wait(0.005)
            proc.kill()
            proc.wait(10)
            served = len(outcomes)
            while len(outcomes) < served + 50:
                threading.Event().wait(0.005)
        finally:
            stop.set()
            worker.join(30)
        store.close()
    assert errors == []
    assert outcomes[:50] == [True] * 50
    assert outcomes[-20:] == [False] * 20  # the declared fallback, after the kill
    assert store.breaker.opened_at is not None  # the breaker skips the dead store


@pytest.mark.integration
def test_a_silent_redis_times_out_and_reads_resume_when_it_answers() -> None:
    with redis_server() as (url, proc):
        store = RedisStore(url, "test:silent", timeout_s=0.05)
        store.write(TABLE, "customer_id", as_of=1.0)
        store.breaker.cooldown_s = 0.0  # probe at once, instead of after 5 s
        proc.send_signal(signal.SIGSTOP)
        try:
            for _ in range(6):
                with pytest.raises(StoreUnavailable):
                    store.read([1], NUMBERS, STRINGS)
        finally:
            proc.send_signal(signal.SIGCONT)
        store.client.connection_pool.reset()  # drop the connection holding a late answer
        assert store.read([1], NUMBERS, STRINGS).found.tolist() == [True]
        assert store.breaker.opened_at is None
        store.close()


def test_settings_come_from_the_section_and_the_environment() -> None:
    spec = online_spec(
        {"redis_url": "redis://127.0.0.1:1/0", "ttl_s": 60},
        {"PRODML_FEATURES__ONLINE__TIMEOUT_MS": "20", "PRODML_FEATURES__ONLINE__MISSING": "defaults"},
    )
    assert (spec.redis_url, spec.ttl_s, spec.timeout_ms, spec.missing) == (
        "redis://127.0.0.1:1/0",
        60,
        20.0,
        "defaults",
    )
    assert isinstance(open_store(spec, root=Path(), name="churn"), RedisStore)
    assert isinstance(open_store(OnlineSpec(), root=Path("/x"), name="churn"), SQLiteStore)
    with pytest.raises(ConfigError, match=r"features\.online\.missing") as info:
        online_spec({}, {"PRODML_FEATURES__ONLINE__MISSING": "ignore"})
    assert "PRODML_FEATURES__ONLINE__" in (info.value.hint or "")


@pytest.mark.integration
def test_redis_rows_of_two_layouts_read_by_name(redis_url: str) -> None:
    store = RedisStore(redis_url, "test:layouts", timeout_s=1.0)
    store.write(TABLE, "customer_id", as_of=1.0)
    reordered = TABLE.select(["customer_id", "spend_30d", "plan", "visits_7d"]).slice(0, 1)
    store.write(reordered.set_column(1, "spend_30d", pa.array([99.0])), "customer_id", as_of=2.0)
    numbers, strings, found = _values(store, [1, 2])
    assert numbers == [[3.0, 99.0], [0.0, None]] and strings == [["pro"], [None]] and found == [True, True]
    with pytest.raises(Exception, match="lacks features the model takes: visits_90d"):
        store.read([1], ["visits_90d"], [])
    store.close()
