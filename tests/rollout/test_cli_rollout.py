"""Bad input to ``prodml rollout`` and the deployment spec: a clear error, and nothing changed."""

from __future__ import annotations

from dataclasses import replace

import pytest
from typer.testing import CliRunner

from prodml.cli import app
from prodml.core.errors import ConfigError
from prodml.registry.deployment import Deployment, Stickiness, Variant, parse_spec
from tests.rollout.conftest import Versions, reset

runner = CliRunner()


def run(versions: Versions, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["--project", str(versions.root), "rollout", *args], env=versions.env)


def unchanged(versions: Versions, before: Deployment | None) -> None:
    after = versions.store().read()
    assert (after.revision if after else None) == (before.revision if before else None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["canary", "7", "--no-wait"], "version 7 is not registered (have: 1, 2"),
        (["canary", "1", "--no-wait"], "already the primary"),
        (["canary", "2", "--steps", "50,20", "--no-wait"], "increasing percents"),
        (["canary", "2", "--steps", "ten", "--no-wait"], "not a list of percents"),
        (["canary", "2", "--interval", "soon", "--no-wait"], "not a duration"),
        (["canary", "2", "--max-error-rate", "150%", "--no-wait"], "not a share"),
        (["canary", "2", "--failures", "0", "--no-wait"], "give at least 1"),
        (["pause"], "no rollout is in progress"),
        (["promote"], "no rollout is in progress"),
        (["ab", "1"], "is the primary already"),
        (["ab", "2", "--split", "100"], "strictly between 0 and 100"),
        (["ab", "7"], "version 7 is not registered"),
        (["ab-report"], "has no A/B test"),
        (["canary", "2", "--require-shadow", "--no-wait"], "version 2 is not the shadow"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(versions: Versions, args: list[str], message: str) -> None:
    reset(versions)
    before = versions.store().read()
    result = run(versions, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    unchanged(versions, before)


def test_a_second_rollout_is_refused_while_one_runs(versions: Versions) -> None:
    reset(versions)
    first = run(versions, "canary", "2", "--steps", "10,100", "--no-wait", "--replica", "http://127.0.0.1:9")
    assert first.exit_code == 0, first.output
    before = versions.store().read()
    assert before is not None and before.active
    assert [(v.version, v.weight) for v in before.variants] == [("1", 90), ("2", 10)]
    second = run(versions, "canary", "2", "--no-wait", "--replica", "http://127.0.0.1:9")
    assert second.exit_code == 2
    assert "already running" in second.stderr and "one rollout at a time" in second.stderr
    unchanged(versions, before)
    status = run(versions, "status")
    assert status.exit_code == 0 and "canary of version 2: running" in status.stdout
    paused = run(versions, "pause", "--why", "looking at a dashboard")
    assert paused.exit_code == 0
    assert versions.store().read().rollout["status"] == "paused"  # type: ignore[union-attr]
    aborted = run(versions, "abort")
    assert aborted.exit_code == 0
    spec = versions.store().read()
    assert spec is not None and not spec.active and [v.version for v in spec.variants] == ["1"]
    actions = [e.action for e in versions.store().events()[-3:]]
    assert actions == ["canary started", "paused", "aborted"]
    assert versions.store().events()[-2].why == "looking at a dashboard"


def test_an_invalid_spec_is_refused_whole(versions: Versions) -> None:
    reset(versions)
    store = versions.store()
    before = store.read()
    assert before is not None
    bad = replace(
        before,
        variants=(
            Variant("primary", "1", 60, "primary"),
            Variant("b", "2", 30, "arm"),
            Variant("ghost", "9", 0, "shadow"),
        ),
        stickiness=Stickiness(field="customer_id", header="x-user"),
    )
    with pytest.raises(ConfigError) as refused:
        store.write(bad, action="test", why="test", expect_revision=before.revision)
    problems = dict(refused.value.problems)
    assert "sum to 90" in problems["variants"]
    assert "version 9 is not registered" in problems["variants[2].version"]
    assert "variants[2].sample" in problems and "stickiness" in problems
    unchanged(versions, before)
    with pytest.raises(ConfigError, match="changed meanwhile"):
        store.write(before, action="test", why="stale", expect_revision=before.revision - 1)
    unchanged(versions, before)


def test_a_damaged_spec_says_where_it_is() -> None:
    with pytest.raises(ConfigError, match=r"deployment spec in prodml\.deployment is not valid"):
        parse_spec('{"variants": [{"name": "primary"}]}')
    spec = Deployment(3, (Variant("primary", "1", 100.0),), Stickiness(header="x-user"))
    assert parse_spec(spec.to_json()) == spec
