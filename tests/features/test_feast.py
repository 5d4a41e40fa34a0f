"""Feast interop: the exported repository applies in Feast and serves what prodml's store serves.

Feast is driven in subprocesses (``feast`` beside this interpreter, or in /work/main/.venv-feast):
importing it takes seconds and it is not a dependency of prodml.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from prodml.core.errors import ConfigError
from prodml.core.project import Project
from prodml.data.online_store import SQLiteStore
from prodml.data.sources import Catalog
from prodml.features.feast import export_feast, feast_redis_connection
from prodml.features.materialize import materialize

STRINGS = ["plan", "country"]
READ = """
import json, sys
from datetime import datetime, timedelta
from pathlib import Path
from feast import FeatureStore
from prodml.data.online_store import FeastStore
repo, as_of = sys.argv[1], datetime.fromisoformat(sys.argv[2])
keys, numbers, strings = (json.loads(a) for a in sys.argv[3:6])
FeatureStore(repo_path=repo).materialize(as_of - timedelta(seconds=1), as_of + timedelta(seconds=1))
got = FeastStore(Path(repo)).read(keys, numbers, strings)
numbers = [[None if v != v else v for v in row] for row in got.numbers.tolist()]
print(json.dumps({"numbers": numbers, "strings": got.strings.tolist(), "found": got.found.tolist()}))
"""


def _feast_bin() -> Path:
    for candidate in (Path(sys.executable).with_name("feast"), Path("/work/main/.venv-feast/bin/feast")):
        if candidate.is_file():
            return candidate
    pytest.fail("Feast is not installed: pip install 'feast==0.67.0' (the feast extra)")


def _run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "FEAST_USAGE": "False", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_the_export_writes_an_entity_a_source_and_one_view_per_block(
    churn_project: Project, tmp_path: Path
) -> None:
    export = export_feast(Catalog(churn_project), tmp_path / "repo")
    assert export.entity == "customer_id" and export.project == "churn"
    assert list(export.views) == ["sessions", "payments", "tickets", "customers"]
    assert export.views["customers"] == ["plan", "country", "age", "monthly_fee"]
    code = (tmp_path / "repo" / "features.py").read_text()
    compile(code, "features.py", "exec")
    assert "ValueType.INT64" in code and "Field(name='sessions_count_7d', dtype=Int64)" in code
    assert "Field(name='plan', dtype=String)" in code
    config = (tmp_path / "repo" / "feature_store.yaml").read_text()
    assert "type: sqlite" in config and "project: churn" in config
    redis = export_feast(
        Catalog(churn_project), tmp_path / "redis", redis_url="redis://:s3cret@10.0.0.5:6380/2"
    )
    assert (
        "connection_string: '10.0.0.5:6380,db=2,password=s3cret'"
        in (redis.directory / "feature_store.yaml").read_text()
    )


def test_redis_urls_become_feast_connection_strings() -> None:
    assert feast_redis_connection("redis://127.0.0.1:6379/0") == "127.0.0.1:6379,db=0"
    assert feast_redis_connection("rediss://h") == "h:6379,ssl=true"
    with pytest.raises(ConfigError, match="not a redis:// URL"):
        feast_redis_connection("http://h:6379")


@pytest.mark.integration
def test_the_exported_repository_applies_in_feast_and_serves_the_same_values(
    churn_project: Project, tmp_path: Path
) -> None:
    feast = _feast_bin()
    repo = tmp_path / "repo"
    export = export_feast(Catalog(churn_project), repo)
    out = _run([str(feast), "apply"], repo)
    assert "churn_sessions" in out or "sessions" in out

    store = SQLiteStore(tmp_path / "online.sqlite")
    result = materialize(Catalog(churn_project), store, as_of=datetime.fromisoformat(export.as_of))
    keys = [int(k) for k in store.keys()[:40]] + [999_999]
    numbers = [n for n in result.features if n not in STRINGS]
    ours = store.read(keys, numbers, STRINGS)
    args = [json.dumps(keys), json.dumps(numbers), json.dumps(STRINGS)]
    python = feast.with_name("python")
    theirs = json.loads(
        _run([str(python), "-c", READ, str(repo), export.as_of, *args], repo).splitlines()[-1]
    )
    assert theirs["found"] == ours.found.tolist() == [True] * 40 + [False]
    np.testing.assert_array_equal(np.array(theirs["numbers"], dtype=np.float64), ours.numbers)
    assert theirs["strings"] == ours.strings.tolist()


def test_the_cli_exports_and_says_what_to_run_next(churn_dir: Path) -> None:
    from typer.testing import CliRunner

    from prodml.cli.main import app

    repo = churn_dir / "feast_repo"
    result = CliRunner().invoke(app, ["--project", str(churn_dir), "features", "export-feast", str(repo)])
    assert result.exit_code == 0, result.output
    assert "feast apply && feast materialize" in result.output.replace("\n", " ")
    assert (repo / "features.py").is_file() and (repo / "data" / "features.parquet").is_file()
