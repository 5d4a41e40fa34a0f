from pathlib import Path

import pytest

from prodml.core.errors import ConfigError
from prodml.core.files import atomic_path
from prodml.core.project import env_overrides, load_project
from prodml.core.settings import Settings
from tests.conftest import write_project

MINIMAL = """
name: demo
entity: id
sources:
  t: {path: data/t.parquet}
target: {source: t, column: y}
"""


def test_minimal_project_gets_defaults_and_resolves_paths(tmp_path: Path) -> None:
    project = load_project(write_project(tmp_path, MINIMAL), environ={})
    assert project.task == "binary"
    assert project.serve.port == 8080
    assert project.root == tmp_path.resolve()
    assert project.resolve("data/t.parquet") == str(tmp_path.resolve() / "data/t.parquet")
    assert project.resolve("s3://b/k.parquet") == "s3://b/k.parquet"


def test_directory_is_accepted_and_missing_file_names_the_fix(tmp_path: Path) -> None:
    write_project(tmp_path, MINIMAL)
    assert load_project(tmp_path, environ={}).name == "demo"
    with pytest.raises(ConfigError, match="no project file") as info:
        load_project(tmp_path / "nowhere", environ={})
    assert "prodml init" in (info.value.hint or "")


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_project(write_project(tmp_path, MINIMAL + "tsak: binary\n"), environ={})
    assert info.value.problems == [("tsak", "unknown key 'tsak' — did you mean 'task'?")]
    assert info.value.exit_code == 2


def test_monitor_thresholds_per_feature_and_unknown_stats(tmp_path: Path) -> None:
    text = MINIMAL + "monitor: {thresholds: {age: {psi: 0.3}, __prediction__: {ks: 0.2, js: null}}}\n"
    monitor = load_project(write_project(tmp_path, text), environ={}).monitor
    assert monitor.thresholds["age"].psi == 0.3 and monitor.thresholds["__prediction__"].ks == 0.2
    with pytest.raises(ConfigError) as info:
        load_project(
            write_project(tmp_path, MINIMAL + "monitor: {thresholds: {age: {psy: 0.3}}}\n"), environ={}
        )
    problems = dict(info.value.problems)
    assert "psy" in problems["monitor.thresholds.age.psy"], problems
    assert "psi" in problems["monitor.thresholds.age.psy"]  # names the valid one


def test_nested_key_path_value_and_message(tmp_path: Path) -> None:
    text = MINIMAL.replace("entity: id", "entity: id\ntask: clustering") + (
        "serve: {port: 99999, workres: 2}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_project(write_project(tmp_path, text), environ={})
    problems = dict(info.value.problems)
    assert "'clustering'" in problems["task"]
    assert "99999" in problems["serve.port"]
    assert problems["serve.workres"] == "unknown key 'workres' — did you mean 'workers'?"


def test_list_index_in_key_path(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + """
features:
  aggregates:
    - {source: t, timestamp: ts, windows: [7, -1]}
"""
    )
    with pytest.raises(ConfigError) as info:
        load_project(write_project(tmp_path, text), environ={})
    assert info.value.problems[0][0] == "features.aggregates[0].windows[1]"


def test_missing_required_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_project(write_project(tmp_path, "name: x\nsources: {}\n"), environ={})
    assert ("target", "required key is missing — add it") in info.value.problems


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 3"):
        load_project(write_project(tmp_path, "name: x\nsources:\n\tt: 1\n"), environ={})


def test_unknown_source_reference(tmp_path: Path) -> None:
    text = MINIMAL.replace("source: t,", "source: tt,")
    with pytest.raises(ConfigError) as info:
        load_project(write_project(tmp_path, text), environ={})
    assert info.value.problems == [("target.source", "unknown source 'tt' — did you mean 't'?")]


def test_source_kinds_are_exclusive(tmp_path: Path) -> None:
    text = MINIMAL.replace("{path: data/t.parquet}", "{path: a.csv, sql: SELECT 1}")
    with pytest.raises(ConfigError, match="exactly one of 'path', 'sql' or 'postgres'"):
        load_project(write_project(tmp_path, text), environ={})
    text = MINIMAL.replace(
        "  t: {path: data/t.parquet}", "  t: {path: data/t.parquet}\n  pg: {postgres: {table: x}}"
    )
    with pytest.raises(ConfigError, match="'dsn' or 'dsn_env'"):
        load_project(write_project(tmp_path, text), environ={})


def test_contract_rules_are_checked_at_load(tmp_path: Path) -> None:
    text = MINIMAL + "contract:\n  t:\n    columns:\n      a: {min: 5, max: 1}\n      b: {regex: '('}\n"
    with pytest.raises(ConfigError) as info:
        load_project(write_project(tmp_path, text), environ={})
    messages = " ".join(m for _, m in info.value.problems)
    assert "min (5.0) is greater than max (1.0)" in messages
    assert "does not compile" in messages


def test_time_features_need_entity_and_timestamp(tmp_path: Path) -> None:
    text = MINIMAL + "features:\n  aggregates: [{source: t, timestamp: ts}]\n"
    with pytest.raises(ConfigError, match="point-in-time"):
        load_project(write_project(tmp_path, text), environ={})


def test_bucketize_needs_increasing_boundaries(tmp_path: Path) -> None:
    text = MINIMAL + "features:\n  transforms: [{column: a, op: bucketize, boundaries: [3, 1]}]\n"
    with pytest.raises(ConfigError, match="strictly increasing"):
        load_project(write_project(tmp_path, text), environ={})


def test_environment_overrides_deployment_sections_only(tmp_path: Path) -> None:
    env = {
        "PRODML_SERVE__PORT": "9001",
        "PRODML_SERVE__CACHE__REDIS_URL": "redis://h:6379/0",
        "PRODML_MODEL__ESTIMATOR": "nope",
        "PRODML_LOG_LEVEL": "DEBUG",
    }
    project = load_project(write_project(tmp_path, MINIMAL), environ=env)
    assert project.serve.port == 9001
    assert project.serve.cache.redis_url == "redis://h:6379/0"
    assert project.model.estimator == "hist_gradient_boosting"  # the model is never overridden
    assert env_overrides({}, {"PRODML_TRACKING__URI": "http://x"}) == {"tracking": {"uri": "http://x"}}


def test_settings_read_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODML_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("PRODML_ADMIN_TOKEN", "s3cret")
    settings = Settings()
    assert settings.log_level == "WARNING"
    assert settings.admin_token == "s3cret"


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_metric_problems_are_reported_at_load_with_key_paths(tmp_path: Path) -> None:
    text = MINIMAL + (
        "task: regression\n"
        "metrics: [rmse, roc_auc, r_2]\n"
        "promotion: {metric: mae}\n"
        "model: {tune: {metric: f1, space: {alpha: [1, 2]}}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_project(write_project(tmp_path, text), environ={})
    problems = dict(info.value.problems)
    assert "does not apply to task 'regression'" in problems["metrics[1]"]
    assert "did you mean 'r2'?" in problems["metrics[2]"]
    assert problems["promotion.metric"].startswith("'mae' is not computed")
    assert "does not apply" in problems["model.tune.metric"]
    assert info.value.exit_code == 2


def test_gate_metric_defaults_to_the_tasks_headline_metric(tmp_path: Path) -> None:
    for task, metric in (("binary", "roc_auc"), ("multiclass", "macro_f1"), ("regression", "r2")):
        text = MINIMAL + f"task: {task}\n"
        assert load_project(write_project(tmp_path, text), environ={}).promotion.metric == metric
    chosen = MINIMAL + "task: regression\nmetrics: [mae]\npromotion: {metric: mae}\n"
    assert load_project(write_project(tmp_path, chosen), environ={}).computed_metrics == ["mae"]


def test_drop_missing_and_date_transforms_are_declared(tmp_path: Path) -> None:
    text = MINIMAL.replace("column: y}", "column: y, drop_missing: true}") + (
        "features:\n  transforms:\n    - {column: day, op: date, parts: [month, dayofweek]}\n"
    )
    project = load_project(write_project(tmp_path, text), environ={})
    assert project.target.drop_missing
    assert project.features.transforms[0].parts == ["month", "dayofweek"]
    bad = MINIMAL + "features:\n  transforms:\n    - {column: n, op: scale, parts: [month]}\n"
    with pytest.raises(ConfigError, match="'parts' applies only to op 'date'"):
        load_project(write_project(tmp_path, bad), environ={})
    unknown = MINIMAL + "features:\n  transforms:\n    - {column: d, op: date, parts: [week]}\n"
    with pytest.raises(ConfigError, match=r"features.transforms\[0\].parts\[0\]"):
        load_project(write_project(tmp_path, unknown), environ={})


def test_metric_table_matches_the_metric_functions() -> None:
    from prodml.core.project import METRIC_TASKS
    from prodml.train.metrics import METRICS

    assert {n: m.tasks for n, m in METRICS.items()} == METRIC_TASKS


def test_monitor_keys_have_defaults_and_bad_values_are_named(tmp_path: Path) -> None:
    project = load_project(
        write_project(tmp_path / "ok", MINIMAL + "monitor: {cooldown: 7d, sample_every: 4}\n"), environ={}
    )
    assert (project.monitor.cooldown, project.monitor.sample_every, project.monitor.rows_per_request) == (
        "7d",
        4,
        16,
    )
    text = MINIMAL + "monitor: {cooldown: soon, sample_every: 0}\n"
    with pytest.raises(ConfigError) as info:
        load_project(write_project(tmp_path / "bad", text), environ={})
    problems = dict(info.value.problems)
    assert "soon" in problems["monitor.cooldown"]
    assert "monitor.sample_every" in problems
