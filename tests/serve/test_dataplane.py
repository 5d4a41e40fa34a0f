"""The data plane with stand-in models: request ids, the request log's failures, readiness."""

from __future__ import annotations

import asyncio

import numpy as np

from prodml.serve.dataplane import DataPlane
from prodml.serve.metrics import Metrics
from prodml.serve.validation import NUMBERS, Validator


def test_a_request_log_that_fails_drops_the_rows_not_the_request(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prodml.serve.dataplane import DataPlane
    from prodml.serve.reqlog import RequestLog

    class Broken(RequestLog):
        def record(self, *args: object, **kwargs: object) -> None:
            raise ValueError("disk on fire")

    class Model:
        name, version = "churn", "1"
        sketch = online = None
        validator = Validator({"inputs": [{"name": "age", "dtype": "float", "nullable": False}]})

        class batcher:  # stands in for the MicroBatcher
            @staticmethod
            async def submit(feeds: dict[str, np.ndarray], rows: int, *, alone: bool) -> list[np.ndarray]:
                return [feeds[NUMBERS] * 2]

    class Manager:
        @staticmethod
        def get(name: object = None, version: object = None) -> Model:
            return Model()

    log = Broken(tmp_path)
    plane = DataPlane(Manager(), metrics=Metrics(), log=log)  # type: ignore[arg-type]
    for _ in range(2):
        answer = asyncio.run(plane.infer({"age": [20.0, 21.0]}))
        assert answer.outputs[0].ravel().tolist() == [40.0, 42.0]
    assert log.dropped == 4


class _Manager:
    """Serves one stand-in model named churn, version 1 (or nothing)."""

    def __init__(self, loaded: bool = True) -> None:
        self.current = _Model() if loaded else None

    def get(self, name: object = None, version: object = None) -> object:
        from prodml.core.errors import NotFound, Unavailable

        if self.current is None:
            raise Unavailable("no model is loaded yet")
        if name not in (None, "churn") or version not in (None, "1"):
            raise NotFound("not served here")
        return self.current


class _Model:
    name, version = "churn", "1"
    sketch = online = None
    validator = Validator({"inputs": [{"name": "age", "dtype": "float", "nullable": False}]})

    class batcher:  # stands in for the MicroBatcher
        @staticmethod
        async def submit(feeds: dict[str, np.ndarray], rows: int, *, alone: bool) -> list[np.ndarray]:
            return [feeds[NUMBERS] * 2]


def _plane(loaded: bool = True) -> DataPlane:
    return DataPlane(_Manager(loaded), metrics=Metrics())  # type: ignore[arg-type]


def _generated_id() -> str:
    return asyncio.run(_plane().infer({"age": [1.0]})).request_id


def test_generated_request_ids_differ_across_forked_workers() -> None:
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:  # how `serve --workers N` starts workers
        child = pool.apply(_generated_id)
    parent = _generated_id()
    assert len(child) == len(parent) == 22
    assert child[:12] != parent[:12]  # each process draws its own prefix


def test_readiness_follows_the_model_and_the_drain() -> None:
    import pytest

    from prodml.core.errors import NotFound

    plane = _plane()
    assert plane.ready() and plane.model_ready("churn") and plane.model_ready("churn", "1")
    with pytest.raises(NotFound):
        plane.model_ready("churn", "9")
    plane.draining = True
    assert not plane.ready() and not plane.model_ready("churn")
    empty = _plane(loaded=False)
    assert not empty.ready() and not empty.model_ready("churn")


def test_serve_counts_each_outcome_once() -> None:
    import pytest

    from prodml.core.errors import InvalidInput

    plane = _plane()

    async def bad() -> None:
        raise InvalidInput("no")

    async def good() -> int:
        return 1

    assert asyncio.run(plane.serve("v2", good)) == 1
    with pytest.raises(InvalidInput):
        asyncio.run(plane.serve("v2", bad))
    with pytest.raises(InvalidInput):
        asyncio.run(plane.serve("grpc", bad))
    text = plane.metrics.render().decode()
    assert 'prodml_requests_total{code="200",protocol="v2"} 1.0' in text
    assert 'prodml_requests_total{code="400",protocol="v2"} 1.0' in text
    assert 'prodml_requests_total{code="INVALID_ARGUMENT",protocol="grpc"} 1.0' in text
    assert 'prodml_errors_total{kind="InvalidInput"} 2.0' in text
