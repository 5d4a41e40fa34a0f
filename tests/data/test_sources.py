from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.orc as paorc
import pyarrow.parquet as pq
import pytest

from prodml.core.errors import ConfigError, DataError, SourceNotFound, Unavailable
from prodml.core.project import load_project
from prodml.data.sources import Catalog, infer_format, read_files
from tests.conftest import write_project

ORDERS = pa.table(
    {
        "customer_id": [1, 1, 2, 3, 3, 3],
        "amount": [10.0, 5.0, 7.5, 1.0, 2.0, 3.0],
        "day": [1, 2, 1, 1, 2, 3],
    }
)
CUSTOMERS = pa.table({"customer_id": [1, 2, 3], "plan": ["basic", "pro", "basic"]})


def _project(tmp_path: Path, sources: str):  # type: ignore[no-untyped-def]
    text = f"name: t\nsources:\n{sources}\ntarget: {{source: customers, column: plan}}\n"
    return load_project(write_project(tmp_path, text), environ={})


@pytest.mark.parametrize("fmt", ["parquet", "orc", "csv"])
def test_each_file_format_round_trips(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"orders.{fmt}"
    {"parquet": pq.write_table, "orc": paorc.write_table, "csv": pacsv.write_csv}[fmt](ORDERS, path)
    table = read_files(str(path))
    assert table.num_rows == 6
    assert table.column("amount").to_pylist() == ORDERS.column("amount").to_pylist()


def test_globs_and_directories_concatenate_files(tmp_path: Path) -> None:
    for i in range(3):
        pq.write_table(ORDERS.slice(2 * i, 2), tmp_path / f"part-{i}.parquet")
    (tmp_path / "_SUCCESS").write_text("")
    assert read_files(str(tmp_path / "part-*.parquet")).num_rows == 6
    assert read_files(str(tmp_path)).num_rows == 6  # markers like _SUCCESS are skipped


def test_missing_and_unreadable_files_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match="no file matches") as info:
        read_files(str(tmp_path / "nope-*.parquet"), name="orders")
    assert "source 'orders'" in info.value.message
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"cannot read .* as parquet"):
        read_files(str(bad))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ConfigError, match="format"):
        read_files(str(tmp_path / "x.json"))


def test_format_inference() -> None:
    assert infer_format("a/b.PARQUET") == "parquet"
    assert infer_format("a/b.csv.gz") == "csv"
    assert infer_format("s3://b/prefix/*") == "parquet"
    assert infer_format("a.txt") == ""


def test_sql_source_joins_and_windows_over_other_sources(tmp_path: Path) -> None:
    pq.write_table(ORDERS, tmp_path / "orders.parquet")
    pq.write_table(CUSTOMERS, tmp_path / "customers.parquet")
    sql = (
        "SELECT c.plan, o.customer_id, o.day, "
        "sum(o.amount) OVER (PARTITION BY o.customer_id ORDER BY o.day) AS running "
        "FROM orders o JOIN customers c USING (customer_id)"
    )
    project = _project(
        tmp_path,
        f"  orders: {{path: orders.parquet}}\n"
        f"  customers: {{path: customers.parquet}}\n  running:\n    sql: {sql}",
    )
    catalog = Catalog(project)
    result = catalog.read("running").sort_by([("customer_id", "ascending"), ("day", "ascending")])
    assert result.column("running").to_pylist() == [10.0, 15.0, 7.5, 1.0, 3.0, 6.0]
    top = catalog.query("SELECT plan, sum(running) AS s FROM running GROUP BY plan ORDER BY plan")
    assert top.to_pylist() == [{"plan": "basic", "s": 35.0}, {"plan": "pro", "s": 7.5}]


def test_sql_sources_in_a_cycle_are_refused(tmp_path: Path) -> None:
    project = _project(tmp_path, "  customers: {sql: SELECT * FROM a}\n  a: {sql: SELECT * FROM customers}")
    with pytest.raises(ConfigError, match="cycle: customers -> a -> customers"):
        Catalog(project).read("customers")


def test_failing_sql_is_a_data_error(tmp_path: Path) -> None:
    pq.write_table(CUSTOMERS, tmp_path / "customers.parquet")
    project = _project(
        tmp_path, "  customers: {path: customers.parquet}\n  bad: {sql: SELECT nope FROM customers}"
    )
    with pytest.raises(DataError, match="source 'bad': the SQL failed") as info:
        Catalog(project).read("bad")
    assert "customers" in (info.value.hint or "")


@pytest.mark.integration
def test_s3_source_through_a_real_s3_api(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    for key, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="lake")
    for i in range(2):
        local = tmp_path / f"p{i}.parquet"
        pq.write_table(ORDERS.slice(3 * i, 3), local)
        s3.upload_file(str(local), "lake", f"orders/part-{i}.parquet")
    pq.write_table(CUSTOMERS, tmp_path / "customers.parquet")
    project = _project(
        tmp_path,
        "  orders: {path: 's3://lake/orders/*.parquet'}\n  customers: {path: customers.parquet}",
    )
    catalog = Catalog(project)
    assert catalog.read("orders").num_rows == 6
    joined = catalog.query(
        "SELECT plan, count(*) AS n FROM orders JOIN customers USING (customer_id) "
        "GROUP BY plan ORDER BY plan"
    )
    assert joined.to_pylist() == [{"plan": "basic", "n": 5}, {"plan": "pro", "n": 1}]
    with pytest.raises(SourceNotFound):
        read_files("s3://lake/nothing/*.parquet")


@pytest.mark.integration
def test_postgres_table_and_query_sources(
    tmp_path: Path, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS pg_customers")
        conn.execute("CREATE TABLE pg_customers (customer_id bigint primary key, plan text, fee float8)")
        conn.execute(
            "INSERT INTO pg_customers VALUES (1, 'basic', 9.99), (2, 'pro', 29.99), (3, 'pro', NULL)"
        )
    monkeypatch.setenv("TEST_PG_DSN", postgres_dsn)
    project = _project(
        tmp_path,
        "  customers: {postgres: {dsn_env: TEST_PG_DSN, table: pg_customers}}\n"
        f"  pros: {{postgres: {{dsn: '{postgres_dsn}', query: \"SELECT customer_id FROM pg_customers "
        "WHERE plan = 'pro' ORDER BY 1\"}}\n"
        "  ghost: {postgres: {dsn_env: TEST_PG_DSN, table: missing_table}}",
    )
    catalog = Catalog(project)
    customers = catalog.read("customers")
    assert customers.num_rows == 3
    assert customers.column("fee").to_pylist() == [9.99, 29.99, None]
    assert catalog.read("pros").column("customer_id").to_pylist() == [2, 3]
    assert catalog.query("SELECT count(*) AS n FROM customers JOIN pros USING (customer_id)").to_pylist() == [
        {"n": 2}
    ]
    with pytest.raises(SourceNotFound, match="missing_table"):
        catalog.read("ghost")


@pytest.mark.integration
def test_postgres_down_is_unavailable_quickly(tmp_path: Path) -> None:
    from tests.servers import free_port

    project = _project(
        tmp_path,
        f"  customers: {{postgres: {{dsn: 'postgresql://u@127.0.0.1:{free_port()}/db', table: t}}}}",
    )
    with pytest.raises(Unavailable, match="cannot reach PostgreSQL"):
        Catalog(project).read("customers")


def test_unset_dsn_variable_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_DSN", raising=False)
    project = _project(tmp_path, "  customers: {postgres: {dsn_env: NOT_SET_DSN, table: t}}")
    with pytest.raises(ConfigError, match="NOT_SET_DSN is not set"):
        Catalog(project).read("customers")
