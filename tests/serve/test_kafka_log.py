"""The request/response log on a real Kafka-protocol broker: one message per request keyed by its id,
labels on the feedback topic, and a broker that dies mid-run costs clients nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.serve.conftest import Served
from tests.servers import ServeProcess, free_port, kafka_broker


def consume(bootstrap: str, topic: str, keys: set[str], timeout: float = 40.0) -> dict[str, list[Any]]:
    """Every message of ``topic`` (all partitions, from the start) until ``keys`` are all seen."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test", "enable.auto.commit": False})
    found: dict[str, list[Any]] = {}
    try:
        deadline = time.monotonic() + timeout
        partitions: set[int] = set()
        while time.monotonic() < deadline and not keys <= found.keys():
            meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
            now = set(meta.partitions) if meta is not None and meta.error is None else set()
            if now - partitions:
                partitions = now
                consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                found.setdefault(message.key().decode(), []).append(json.loads(message.value()))
    finally:
        consumer.close()
    assert keys <= found.keys(), f"missing on {topic}: {sorted(keys - found.keys())[:5]}"
    return found


@pytest.mark.integration
def test_request_log_on_kafka(served: Served) -> None:
    port = free_port()
    with kafka_broker(port) as (bootstrap, broker):
        env = {
            **served.env,
            "PRODML_SERVE__REQUEST_LOG__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "PRODML_SERVE__CACHE__ENABLED": "false",
        }
        with (
            ServeProcess(served.root, env) as server,
            httpx.Client(base_url=server.url, timeout=10) as client,
        ):
            server.wait_ready()
            rows = served.rows[:2]
            r = client.post("/predict", json=rows, headers={"x-request-id": "req-two-rows"})
            assert r.status_code == 200, r.text
            split = {"columns": list(rows[0]), "data": [list(rows[2 - 1].values())]}
            r = client.post(
                "/invocations", json={"dataframe_split": split}, headers={"x-request-id": "req-mlflow"}
            )
            assert r.status_code == 200, r.text
            fb = client.post("/v2/models/churn/feedback", json=[{"request_id": "req-two-rows", "label": 1}])
            assert fb.status_code == 200, fb.text

            logged = consume(bootstrap, "prodml-requests", {"req-two-rows", "req-mlflow"})
            message = logged["req-two-rows"][0]
            assert (message["model"], message["version"], message["rows"]) == ("churn", "1", 2)
            assert set(message["inputs"]) == set(rows[0])
            for name, value in rows[0].items():
                got = message["inputs"][name]
                assert len(got) == 2
                if isinstance(value, str):
                    assert got[0] == value
                elif value is None:
                    assert got[0] is None
                else:
                    assert got[0] == pytest.approx(value, rel=1e-6, abs=1e-6)  # float32 on the wire
            assert len(message["prediction"]) == 2
            assert all(sum(p) == pytest.approx(1.0, abs=1e-5) for p in message["prediction"])
            assert logged["req-mlflow"][0]["rows"] == 1
            labels = consume(bootstrap, "prodml-feedback", {"req-two-rows"})
            assert labels["req-two-rows"][0]["label"] == 1.0

            # prodml monitor reads the same log back (its default source, when the server logs to Kafka)
            from prodml.core.project import load_project
            from prodml.monitor.sources import load

            frame = load("requests", load_project(served.root, environ=env))
            assert sorted(frame["request_id"]) == ["req-mlflow", "req-two-rows", "req-two-rows"]
            two = frame[frame["request_id"] == "req-two-rows"]
            assert list(two["label"]) == [1.0, 1.0]
            assert frame[frame["request_id"] == "req-mlflow"]["label"].isna().all()
            assert two["__prediction__"].between(0, 1).all() and (frame["version"] == "1").all()
            numeric = next(k for k, v in rows[0].items() if isinstance(v, float))
            assert two[numeric].iloc[0] == pytest.approx(rows[0][numeric], rel=1e-6)

            # and so does the A/B report (prodml rollout ab-report): variant, prediction, label per row
            from prodml.rollout.abtest import _arm
            from prodml.rollout.log import labelled_log

            table = labelled_log(load_project(served.root, environ=env))
            assert table.num_rows == 3 and set(table.column("variant").to_pylist()) == {"primary"}
            labels, scores = _arm(table, "primary")
            assert list(labels) == [1.0, 1.0] and ((scores >= 0) & (scores <= 1)).all()

            # the broker dies: clients see nothing; what was logged meanwhile is delivered once it is back
            broker.kill()
            broker.wait(5)
            ids = {f"req-down-{i}" for i in range(50)}
            codes = [
                client.post(
                    "/predict", json=served.rows[i : i + 1], headers={"x-request-id": rid}
                ).status_code
                for i, rid in enumerate(sorted(ids))
            ]
            assert codes == [200] * 50
            time.sleep(0.5)
            with kafka_broker(port) as (again, _):
                consume(again, "prodml-requests", ids, timeout=60)
                metrics = client.get("/metrics").text
                assert "prodml_request_log_dropped_rows_total 0.0" in metrics
                assert "prodml_request_log_lost_requests_total 0.0" in metrics
                assert server.stop() == 0


def _entry(rows: int) -> tuple[Any, ...]:
    import numpy as np

    numbers = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    numbers[0, 1] = np.nan
    strings = np.array([[f"plan-{i}"] for i in range(rows)], dtype=object)
    prediction = np.full((rows, 2), 0.5, np.float32)
    return ("r1", "churn", "4", "primary", 12.5, (("a", "b"), ("plan",)), numbers, strings, prediction)


def test_a_log_message_holds_inputs_by_column_and_nulls_as_null() -> None:
    from prodml.serve.kafka import messages_of

    [(rows, value)] = messages_of(_entry(2))  # type: ignore[arg-type]
    assert rows == 2
    assert json.loads(value) == {
        "request_id": "r1",
        "model": "churn",
        "version": "4",
        "variant": "primary",
        "ts": 12.5,
        "rows": 2,
        "first_row": 0,
        "part": 0,
        "parts": 1,
        "inputs": {"a": [0.0, 2.0], "b": [None, 3.0], "plan": ["plan-0", "plan-1"]},
        "prediction": [[0.5, 0.5], [0.5, 0.5]],
    }


def test_a_request_too_big_for_one_message_is_split_by_rows_under_its_key() -> None:
    from prodml.serve.kafka import messages_of

    parts = messages_of(_entry(500), max_bytes=4000)  # type: ignore[arg-type]
    assert len(parts) > 1
    decoded = [json.loads(value) for _, value in parts]
    assert all(len(value) <= 4000 for _, value in parts)
    assert [m["part"] for m in decoded] == list(range(len(parts)))
    assert {m["parts"] for m in decoded} == {len(parts)}
    assert [rows for rows, _ in parts] == [m["rows"] for m in decoded]
    assert [m["first_row"] for m in decoded] == [
        sum(m["rows"] for m in decoded[:i]) for i in range(len(parts))
    ]
    plans = [p for m in decoded for p in m["inputs"]["plan"]]
    assert plans == [f"plan-{i}" for i in range(500)]


def test_with_the_broker_away_what_cannot_wait_is_dropped_and_what_times_out_is_lost() -> None:
    import numpy as np

    from prodml.core.project import KafkaLog
    from prodml.serve.kafka import KafkaRequestLog
    from prodml.serve.validation import NUMBERS

    spec = KafkaLog(
        bootstrap_servers=f"127.0.0.1:{free_port()}",  # nothing listens
        config={"queue.buffering.max.messages": 2, "message.timeout.ms": 300},
    )
    log = KafkaRequestLog(spec)
    feeds = {NUMBERS: np.ones((3, 2), np.float32)}
    for i in range(5):
        log.record(f"r{i}", "churn", "1", feeds, [np.ones((3, 2), np.float32)], 1.0, (("a", "b"), ()))
    assert log.absorb() is False
    assert log.dropped == 3 * 3  # two messages queued; three requests of three rows did not fit
    log.flush(timeout_s=5)
    assert log.lost == 2  # the two queued ones timed out


def test_settings_librdkafka_refuses_are_a_config_error() -> None:
    from prodml.core.errors import ConfigError
    from prodml.core.project import KafkaLog
    from prodml.serve.kafka import KafkaRequestLog

    with pytest.raises(ConfigError, match=r"no\.such\.property"):
        KafkaRequestLog(KafkaLog(bootstrap_servers="127.0.0.1:1", config={"no.such.property": "1"}))


@pytest.mark.integration
def test_workers_that_cannot_start_say_why_and_the_server_exits_with_their_code(served: Served) -> None:
    env = {
        **served.env,
        "PRODML_SERVE__REQUEST_LOG__KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "PRODML_SERVE__REQUEST_LOG__KAFKA__CONFIG": '{"no.such.property": "1"}',
    }
    with ServeProcess(served.root, env, "--workers", "2") as server:
        assert server.proc.wait(30) == 2  # ConfigError's exit code
        output = server.output()
        assert output.count("librdkafka refuses the settings") == 2, output
        assert "Traceback" not in output, output
