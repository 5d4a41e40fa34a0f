"""Online features in the data plane: requests that carry only the entity key, over REST and gRPC, on a
real server reading a real SQLite or Redis store; the missing-entity and store-down policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from prodml.core.project import load_project
from prodml.data.online_store import online_spec, opened
from prodml.data.sources import Catalog
from prodml.features.materialize import materialize
from tests.serve.conftest import Served
from tests.servers import ServeProcess, redis_server

pytestmark = pytest.mark.integration
ENTITY = "customer_id"


def _materialize(root: Path, env: dict[str, str]) -> list[str]:
    """Fill the store the project (with ``env``'s overrides) names; the keys it holds."""
    project = load_project(root)
    spec = online_spec(project.features.online, env)
    with opened(spec, root=project.root, name=project.name) as store:
        materialize(Catalog(project), store)
        return sorted(store.keys(), key=int)


def _stored_rows(served: Served, env: dict[str, str], keys: list[str]) -> list[dict[str, Any]]:
    """The full model inputs of ``keys`` as the store holds them (what a client would otherwise send)."""
    project = load_project(served.root)
    inputs = served.rows[0]
    numbers = [k for k, v in inputs.items() if not isinstance(v, str)]
    strings = [k for k, v in inputs.items() if isinstance(v, str)]
    with opened(online_spec(project.features.online, env), root=served.root, name=project.name) as store:
        columns = store.read(keys, numbers, strings).columns()
    return [{k: _plain(v[i]) for k, v in columns.items()} for i in range(len(keys))]


def _plain(value: Any) -> Any:
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    return value


def _predict(url: str, rows: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{url}/predict", json=rows, timeout=10)


def _grpc_by_key(port: int, keys: list[int]) -> tuple[str, np.ndarray | None]:
    request = pb.ModelInferRequest(model_name="churn")
    tensor = request.inputs.add(name=ENTITY, datatype="INT64", shape=[len(keys)])
    tensor.contents.int64_contents.extend(keys)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        except grpc.RpcError as exc:
            return exc.code().name, None
    names = [o.name for o in response.outputs]
    return "OK", np.frombuffer(response.raw_output_contents[names.index("probabilities")], "<f4")


def _probabilities(response: httpx.Response) -> list[float]:
    """The positive class's probability of each row (``/predict`` of a binary model)."""
    return [r["probability"] for r in response.json()["predictions"]]


def _online_rows(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        s.labels["result"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "prodml_online_feature_rows"
        for s in f.samples
        if s.name.endswith("_total")
    }


def test_sqlite_a_request_with_only_the_key_is_served_as_the_full_row_over_rest_and_grpc(
    project_copy: Served,
) -> None:
    keys = _materialize(project_copy.root, {})
    some = keys[:3]
    full = _stored_rows(project_copy, {}, some)
    with ServeProcess(project_copy.root, project_copy.env) as server:
        server.wait_ready()
        by_key = _predict(server.url, [{ENTITY: int(k)} for k in some])
        assert by_key.status_code == 200, by_key.text
        sent = _predict(server.url, full)
        assert sent.status_code == 200, sent.text
        assert np.allclose(_probabilities(by_key), _probabilities(sent), atol=1e-6)

        code, grpc_probs = _grpc_by_key(server.grpc_port, [int(k) for k in some])
        assert code == "OK"
        assert grpc_probs is not None
        assert np.allclose(grpc_probs.reshape(len(some), 2)[:, 1], _probabilities(sent), atol=1e-6)

        # a request-time value wins over the store's
        plan = "basic" if full[0]["plan"] != "basic" else "pro"
        other = _predict(server.url, [{ENTITY: int(some[0]), "plan": plan, "age": 90}])
        assert other.status_code == 200, other.text
        assert _probabilities(other) == _probabilities(
            _predict(server.url, [{**full[0], "plan": plan, "age": 90}])
        )

        # an entity the store lacks: 404 naming it (missing: reject, the default), over both
        unknown = _predict(server.url, [{ENTITY: 99_999_999}])
        assert unknown.status_code == 404
        assert "99999999" in unknown.text
        assert _grpc_by_key(server.grpc_port, [99_999_999])[0] == "NOT_FOUND"
        assert _predict(server.url, [{ENTITY: None}]).status_code == 400  # a null key names the field

        # a request with every input and the key does not touch the store (the key is logged)
        assert _predict(server.url, [{**full[0], ENTITY: 99_999_999}]).status_code == 200
        counted = _online_rows(server.url)
        assert counted.get("found") == 2 * len(some) + 1
        assert server.stop() == 0

    # the request log holds the served vectors with their entity key
    logged = pq.read_table(project_copy.root / ".prodml/requests/requests").to_pandas()
    keyed = logged[logged[ENTITY].notna()] if ENTITY in logged else logged.iloc[:0]
    assert sorted(set(keyed[ENTITY])) == sorted([*some, "99999999"])
    assert len(keyed) == 2 * len(some) + 2


def test_redis_missing_entities_get_defaults_and_a_store_down_answers_424_never_5xx(
    project_copy: Served,
) -> None:
    with redis_server() as (url, redis):
        env = {
            "PRODML_FEATURES__ONLINE__REDIS_URL": url,
            "PRODML_FEATURES__ONLINE__MISSING": "defaults",
            "PRODML_FEATURES__ONLINE__UNAVAILABLE": "reject",
        }
        keys = _materialize(project_copy.root, env)
        with ServeProcess(project_copy.root, {**project_copy.env, **env}, "--no-log-requests") as server:
            server.wait_ready()
            assert _predict(server.url, [{ENTITY: int(keys[0])}]).status_code == 200
            # missing: defaults — served from the profile's defaults, and counted
            assert _predict(server.url, [{ENTITY: 99_999_999}]).status_code == 200
            assert _grpc_by_key(server.grpc_port, [99_999_999])[0] == "OK"
            assert _online_rows(server.url) == {"found": 1.0, "missing": 2.0}
            redis.kill()
            redis.wait(10)
            down = _predict(server.url, [{ENTITY: int(keys[0])}])
            assert down.status_code == 424, down.text
            assert keys[0] in down.text
            assert _grpc_by_key(server.grpc_port, [int(keys[0])])[0] == "UNAVAILABLE"
            # a request that carries its features is still served
            assert _predict(server.url, _stored_rows_fallback(project_copy)).status_code == 200
            assert server.stop() == 0


def _stored_rows_fallback(served: Served) -> list[dict[str, Any]]:
    return [{k: (0.0 if v is None else v) for k, v in served.rows[0].items()}]


def test_redis_down_with_the_defaults_policy_serves_defaults(project_copy: Served) -> None:
    with redis_server() as (url, redis):
        env = {"PRODML_FEATURES__ONLINE__REDIS_URL": url, "PRODML_FEATURES__ONLINE__TIMEOUT_MS": "50"}
        keys = _materialize(project_copy.root, env)
        with ServeProcess(project_copy.root, {**project_copy.env, **env}, "--no-log-requests") as server:
            server.wait_ready()
            redis.kill()
            redis.wait(10)
            for _ in range(8):  # past the circuit breaker's 5 failures too
                assert _predict(server.url, [{ENTITY: int(keys[1])}]).status_code == 200
                assert _grpc_by_key(server.grpc_port, [int(keys[1])])[0] == "OK"
            assert _online_rows(server.url) == {"fallback": 16.0}
            assert server.stop() == 0
