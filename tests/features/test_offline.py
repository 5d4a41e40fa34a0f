"""Point-in-time correctness of the offline store, on hand-made data with hand-computed answers."""

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prodml.core.errors import FeatureError
from prodml.core.project import load_project
from prodml.data.sources import Catalog
from prodml.features.offline import aggregate_sql, build_training_frame, feature_names
from tests.conftest import write_project

T0 = datetime(2025, 3, 1)


def day(d: float) -> datetime:
    return T0 + timedelta(days=d)


LABELS = pa.table(
    {
        "user": pa.array([1, 1, 2], pa.int64()),
        "at": pa.array([day(10), day(40), day(10)], pa.timestamp("us")),
        "y": [0, 1, 0],
    }
)
EVENTS = pa.table(
    {
        "user": pa.array([1, 1, 1, 1, 2, 1], pa.int64()),
        "ts": pa.array([day(0), day(5), day(9.5), day(10), day(3), day(10.001)], pa.timestamp("us")),
        "amount": [1.0, 2.0, 4.0, 8.0, 100.0, 1000.0],
        "ok": [True, False, True, True, True, False],
    }
)
PROFILES = pa.table(
    {
        "user": pa.array([1, 1, 2], pa.int64()),
        "valid_from": pa.array([day(-100), day(20), day(-5)], pa.timestamp("us")),
        "tier": ["free", "paid", "free"],
    }
)

PROJECT = """
name: pit
entity: user
sources:
  labels: {path: data/labels.parquet}
  events: {path: data/events.parquet}
  profiles: {path: data/profiles.parquet}
target: {source: labels, column: y, timestamp: at}
features:
  aggregates:
    - source: events
      timestamp: ts
      windows: [1, 7]
      metrics:
        - {column: "*", agg: [count]}
        - {column: amount, agg: [sum, mean, max]}
        - {column: ok, agg: [sum]}
  attributes:
    - {source: profiles, timestamp: valid_from, columns: [tier]}
"""


@pytest.fixture
def frame(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = write_project(tmp_path, PROJECT, {"labels": LABELS, "events": EVENTS, "profiles": PROFILES})
    return build_training_frame(Catalog(load_project(path, environ={})))


def _rows(frame) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    return frame.table.to_pylist()  # type: ignore[no-any-return]


def test_window_aggregates_match_hand_computed_values(frame) -> None:  # type: ignore[no-untyped-def]
    by_key = {(r["user"], r["at"]): r for r in _rows(frame)}
    u1 = by_key[(1, day(10))]
    # Events of user 1 at or before day 10: days 0, 5, 9.5, 10 (amounts 1, 2, 4, 8).
    assert u1["events_count_7d"] == 3  # days 5, 9.5, 10 lie in [day 3, day 10]
    assert u1["events_amount_sum_7d"] == 14.0
    assert u1["events_amount_mean_7d"] == pytest.approx(14 / 3)
    assert u1["events_amount_max_7d"] == 8.0
    assert u1["events_count_1d"] == 2  # days 9.5 and 10
    assert u1["events_ok_sum_7d"] == 2.0
    assert u1["events_days_since_last"] == 0.0  # the event at exactly the label time counts
    u1_late = by_key[(1, day(40))]
    assert u1_late["events_count_7d"] == 0
    assert u1_late["events_amount_sum_7d"] is None
    assert u1_late["events_days_since_last"] == pytest.approx(40 - 10.001)
    u2 = by_key[(2, day(10))]
    assert (u2["events_count_7d"], u2["events_amount_sum_7d"]) == (1, 100.0)


def test_an_event_after_the_label_time_is_never_used(frame) -> None:  # type: ignore[no-untyped-def]
    # The planted event (amount 1000, 1.4 minutes after user 1's first label) must not leak into it.
    u1 = next(r for r in _rows(frame) if r["user"] == 1 and r["at"] == day(10))
    assert 1000.0 not in (u1["events_amount_max_7d"], u1["events_amount_max_1d"])
    assert u1["events_amount_sum_1d"] == 12.0


def test_attributes_are_joined_as_of_the_label_time(frame) -> None:  # type: ignore[no-untyped-def]
    tiers = {(r["user"], r["at"]): r["tier"] for r in _rows(frame)}
    assert tiers == {(1, day(10)): "free", (1, day(40)): "paid", (2, day(10)): "free"}
    assert frame.categorical == ["tier"]


def test_frame_layout_and_lineage(frame, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cols = frame.table.column_names
    assert cols[:2] == ["user", "at"] and cols[-1] == "y"
    assert frame.features == cols[2:-1]
    assert frame.table.num_rows == 3
    assert set(frame.lineage["inputs"]) == {"labels", "events", "profiles"}
    # Changing one input value changes the lineage hash; rebuilding unchanged data does not.
    again = build_training_frame(Catalog(load_project(tmp_path, environ={})))
    assert again.lineage["hash"] == frame.lineage["hash"]
    pq.write_table(
        EVENTS.set_column(2, "amount", pa.array([1.0, 2, 4, 8, 100, 999])),
        tmp_path / "data/events.parquet",
    )
    changed = build_training_frame(Catalog(load_project(tmp_path, environ={})))
    assert changed.lineage["hash"] != frame.lineage["hash"]
    assert changed.lineage["definitions"] == frame.lineage["definitions"]


def test_unknown_column_names_the_close_match(tmp_path: Path) -> None:
    text = PROJECT.replace("column: amount, agg", "column: amout, agg")
    path = write_project(tmp_path, text, {"labels": LABELS, "events": EVENTS, "profiles": PROFILES})
    with pytest.raises(FeatureError, match="no column 'amout'") as info:
        build_training_frame(Catalog(load_project(path, environ={})))
    assert "did you mean 'amount'" in (info.value.hint or "")


def test_ambiguous_attribute_join_is_refused(tmp_path: Path) -> None:
    text = PROJECT.replace(
        "{source: profiles, timestamp: valid_from, columns: [tier]}",
        "{source: profiles, columns: [tier]}",
    )
    path = write_project(tmp_path, text, {"labels": LABELS, "events": EVENTS, "profiles": PROFILES})
    with pytest.raises(FeatureError, match="1 duplicate 'user' values"):
        build_training_frame(Catalog(load_project(path, environ={})))


def test_same_table_features_for_static_datasets(tmp_path: Path) -> None:
    table = pa.table({"id": [1, 2, 3], "a": [0.5, 1.5, 2.5], "b": ["x", "y", "x"], "y": [0, 1, 0]})
    text = (
        "name: s\nentity: id\nsources: {t: {path: data/t.parquet}}\n"
        "target: {source: t, column: y}\nfeatures: {attributes: [{source: t, columns: ['*']}]}\n"
    )
    frame = build_training_frame(
        Catalog(load_project(write_project(tmp_path, text, {"t": table}), environ={}))
    )
    assert frame.table.column_names == ["id", "a", "b", "y"]
    assert frame.features == ["a", "b"]
    assert frame.categorical == ["b"]


def test_feature_names_follow_the_definition() -> None:
    from prodml.core.project import Aggregate

    agg = Aggregate.model_validate(
        {
            "source": "s",
            "timestamp": "ts",
            "windows": [30],
            "metrics": [{"column": "*"}, {"column": "x", "agg": ["max"]}],
            "prefix": "web",
        }
    )
    assert feature_names(agg) == ["web_count_30d", "web_x_max_30d", "web_days_since_last"]


@pytest.mark.integration
def test_window_sql_gives_the_same_answer_on_postgresql(frame, postgres_dsn: str) -> None:  # type: ignore[no-untyped-def]
    """The compiled window SQL is portable: PostgreSQL computes exactly what DuckDB computed."""
    import psycopg

    from prodml.core.project import Aggregate

    agg = Aggregate.model_validate(load_project_text(PROJECT)["features"]["aggregates"][0])
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS pit_events, pit_spine")
        conn.execute('CREATE TABLE pit_events ("user" bigint, ts timestamp, amount float8, ok boolean)')
        conn.execute('CREATE TABLE pit_spine (__label_row bigint, "user" bigint, at timestamp)')
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO pit_events VALUES (%s, %s, %s, %s)",
                [tuple(r.values()) for r in EVENTS.to_pylist()],
            )
            cur.executemany(
                "INSERT INTO pit_spine VALUES (%s, %s, %s)",
                [(i, r["user"], r["at"]) for i, r in enumerate(LABELS.to_pylist())],
            )
            sql = aggregate_sql(
                agg,
                entity="user",
                events="pit_events",
                spine="pit_spine",
                spine_ts="at",
                bool_columns=frozenset({"ok"}),
            )
            cur.execute(sql + " ORDER BY __label_row")
            names = [d.name for d in cur.description or ()]
            pg_rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    duck_rows = _rows(frame)
    assert len(pg_rows) == 3
    for pg_row in pg_rows:
        i = pg_row.pop("__label_row")
        label = LABELS.to_pylist()[i]
        duck = next(r for r in duck_rows if r["user"] == label["user"] and r["at"] == label["at"])
        for name, value in pg_row.items():
            assert value == pytest.approx(duck[name]) if value is not None else duck[name] is None, name


def load_project_text(text: str) -> dict[str, object]:
    import yaml

    return yaml.safe_load(text)  # type: ignore[no-any-return]


def test_unlabelled_rows_are_dropped_and_counted_and_dates_are_features(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": [1, 2, 3, 4, 5],
            "day": pa.array([day(0), day(1), day(2), day(3), day(4)], pa.timestamp("s")),
            "opened": pa.array([d.date() for d in (day(0), day(1), day(2), day(3), day(4))], pa.date32()),
            "y": pa.array([1.5, None, float("nan"), 2.5, 3.5]),
        }
    )
    text = (
        "name: s\nentity: id\nsources: {t: {path: data/t.parquet}}\n"
        "target: {source: t, column: y, timestamp: day, drop_missing: true}\n"
        "features: {attributes: [{source: t, columns: [day, opened]}]}\n"
    )
    frame = build_training_frame(
        Catalog(load_project(write_project(tmp_path, text, {"t": table}), environ={}))
    )
    assert frame.lineage["unlabelled_dropped"] == 2  # a null and a NaN
    assert frame.table.column("y").to_pylist() == [1.5, 2.5, 3.5]
    # the label time is a feature because it is declared so; it appears once in the frame
    assert frame.features == ["day", "opened"]
    assert frame.table.column_names == ["id", "day", "opened", "y"]
    assert frame.dates == ["day", "opened"]


def test_unlabelled_rows_stay_without_drop_missing(tmp_path: Path) -> None:
    table = pa.table({"id": [1, 2], "a": [0.5, 1.5], "y": pa.array([1.0, None])})
    text = (
        "name: s\nentity: id\nsources: {t: {path: data/t.parquet}}\n"
        "target: {source: t, column: y}\nfeatures: {attributes: [{source: t, columns: [a]}]}\n"
    )
    frame = build_training_frame(
        Catalog(load_project(write_project(tmp_path, text, {"t": table}), environ={}))
    )
    assert frame.table.num_rows == 2 and "unlabelled_dropped" not in frame.lineage
