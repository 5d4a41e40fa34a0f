"""The scorer: the server's Validator and Runtime over Arrow batches, with per-row rejects by bisection."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from prodml.batch.scorer import Scorer, check_input_schema
from prodml.core.errors import ConfigError
from prodml.export.package import load_package
from prodml.serve.runtime import Runtime
from prodml.serve.validation import Validator
from tests.batch.conftest import Trained

AT = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def scorer(trained: Trained) -> Scorer:
    return Scorer(load_package(trained.package, None), version="7", id_column="customer_id")


def test_clean_batch_matches_the_servers_validator_and_runtime(trained: Trained, scorer: Scorer) -> None:
    batch = trained.table.slice(0, 500).to_batches()[0]
    scored = scorer.score(batch, first_row=0, scored_at=AT)
    assert scored.rejects is None and scored.rows == 500 and scored.rejected == 0
    out = scored.output
    assert out is not None
    assert out.column("customer_id").to_pylist() == batch.column("customer_id").to_pylist()
    assert set(out.column("model_version").to_pylist()) == {"7"}
    package = load_package(trained.package, None)
    feeds, _ = Validator(package.schema).feeds(batch.select(scorer.inputs).to_pydict())
    label, proba = Runtime(package).run(feeds)
    assert out.column("probability_1").to_pylist() == proba[:, 1].astype(np.float64).tolist()
    assert out.column("prediction").to_pylist() == [package.schema["classes"][i] for i in label]


def test_bad_rows_are_rejected_with_column_and_reason(trained: Trained, scorer: Scorer) -> None:
    table = trained.table.slice(0, 1000)
    plan = table.column("plan").to_pylist()
    plan[17] = "platinum"
    age = table.column("age").to_pylist()
    age[600] = None  # age is not nullable
    table = table.set_column(table.schema.get_field_index("plan"), "plan", pa.array(plan))
    table = table.set_column(table.schema.get_field_index("age"), "age", pa.array(age))
    scored = scorer.score(table.combine_chunks().to_batches()[0], first_row=0, scored_at=AT)
    assert scored.rejected == 2 and scored.rejects is not None
    rejects = scored.rejects.to_pylist()
    ids = table.column("customer_id").to_pylist()
    assert [r["customer_id"] for r in rejects] == [ids[17], ids[600]]
    assert rejects[0]["column"] == "plan" and "unknown category 'platinum'" in rejects[0]["reason"]
    assert rejects[1]["column"] == "age" and "not nullable" in rejects[1]["reason"]
    assert scored.output is not None and scored.output.num_rows == 998
    assert ids[17] not in scored.output.column("customer_id").to_pylist()
    # the accepted rows are scored exactly as they are alone
    clean = scorer.score(table.slice(18, 100).combine_chunks().to_batches()[0], first_row=0, scored_at=AT)
    assert clean.output is not None
    joined = dict(
        zip(*(scored.output.column(c).to_pylist() for c in ("customer_id", "probability_1")), strict=True)
    )
    assert [joined[i] for i in clean.output.column("customer_id").to_pylist()] == clean.output.column(
        "probability_1"
    ).to_pylist()


def test_row_ids_without_an_id_column_are_positions(trained: Trained) -> None:
    scorer = Scorer(load_package(trained.package, None), version="1")
    batch = trained.table.slice(0, 10).to_batches()[0]
    out = scorer.score(batch, first_row=40, scored_at=AT).output
    assert out is not None and out.column("row").to_pylist() == list(range(40, 50))


def test_unscorable_columns_are_refused_before_reading(trained: Trained) -> None:
    schema = load_package(trained.package, None).schema
    broken = trained.table.schema.remove(trained.table.schema.get_field_index("age"))
    broken = broken.set(broken.get_field_index("plan"), pa.field("plan", pa.int64()))
    with pytest.raises(ConfigError) as info:
        check_input_schema(broken, schema, "input x.parquet")
    message = str(info.value)
    assert "column 'age' is missing" in message and "column 'plan' is int64" in message
    assert info.value.problems == [
        ("plan", "is int64 in the input; the model takes strings"),
        ("age", "is missing from the input"),
    ]
