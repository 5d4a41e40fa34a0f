"""``prodml rollout set``: a whole spec from a file, written to the registry or through a replica's admin
port (token, applied at once); bad specs, tokens and bodies change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.rollout.conftest import TOKEN, Replicas, Versions, reset, versions_served
from tests.rollout.test_cli_rollout import run, unchanged

pytestmark = pytest.mark.integration
AB = {
    "variants": [
        {"name": "primary", "version": "1", "weight": 50, "role": "primary"},
        {"name": "b", "version": "2", "weight": 50, "role": "arm"},
    ],
    "stickiness": {"field": "customer_id"},
}


def write(tmp_path: Path, spec: object, name: str = "spec.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return str(path)


def test_a_spec_set_through_the_admin_port_is_stored_and_served_at_once(
    versions: Versions, replicas: Replicas, tmp_path: Path
) -> None:
    reset(versions)
    replicas.reload()
    result = run(versions, "set", write(tmp_path, AB), "--admin", replicas.admin_urls[0], "--why", "A/B")
    assert result.exit_code == 0, result.output
    spec = versions.store().read()
    assert spec is not None and [v.weight for v in spec.variants] == [50, 50]
    assert spec.stickiness.field == "customer_id"
    event = versions.store().events()[-1]
    assert (event.action, event.why, event.revision) == ("set", "A/B", spec.revision)
    assert event.who.endswith("(admin port)")
    with httpx.Client(timeout=30) as client:  # replica 0 applied it before answering: no poll needed
        served = {
            client.post(f"{replicas.urls[0]}/predict", json={"records": [{**row, "customer_id": i}]}).json()[
                "version"
            ]
            for i, row in enumerate(versions.rows[:40])
        }
    assert served == {"1", "2"}
    reset(versions)
    replicas.reload()
    assert set(versions_served(replicas, versions.rows, 20)) == {"1"}


def test_a_spec_set_in_the_registry(versions: Versions, tmp_path: Path) -> None:
    reset(versions)
    before = versions.store().read()
    yaml_spec = tmp_path / "spec.yaml"
    yaml_spec.write_text(
        "variants:\n  - {name: primary, version: '2', weight: 100, role: primary}\n"
        "  - {name: mirror, version: '1', weight: 0, role: shadow, sample: 25}\n"
    )
    result = run(versions, "set", str(yaml_spec), "--why", "shadow the old one")
    assert result.exit_code == 0, result.output
    spec = versions.store().read()
    assert spec is not None and spec.revision == (before.revision if before else 0) + 1
    assert (spec.primary.version, spec.role("shadow").version) == ("2", "1")  # type: ignore[union-attr]
    reset(versions)


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        ({"variants": [{**AB["variants"][0], "weight": 60}, AB["variants"][1]]}, [], "sum to 110"),  # type: ignore[index]
        ({"variants": [{"name": "p", "version": "9", "weight": 100}]}, [], "version 9 is not registered"),
        ({"variants": "all"}, [], "is not valid"),
        (["not", "a", "spec"], [], "is not a spec object"),
        (AB, ["--admin", "http://127.0.0.1:9"], "did not answer"),
    ],
)
def test_bad_specs_are_refused_and_change_nothing(
    versions: Versions, tmp_path: Path, spec: object, extra: list[str], message: str
) -> None:
    reset(versions)
    before = versions.store().read()
    result = run(versions, "set", write(tmp_path, spec), *extra)
    assert result.exit_code == (7 if extra else 2), result.output  # Unavailable: 7; ConfigError: 2
    assert message in result.stderr and "Traceback" not in result.output
    unchanged(versions, before)


def test_the_admin_port_refuses_a_wrong_token_and_a_bad_body(
    versions: Versions, replicas: Replicas, tmp_path: Path
) -> None:
    reset(versions)
    before = versions.store().read()
    env = {**versions.env, "PRODML_ADMIN_TOKEN": "wrong-token-000000000"}
    from typer.testing import CliRunner

    from prodml.cli import app

    args = ["--project", str(versions.root), "rollout", "set", write(tmp_path, AB)]
    result = CliRunner().invoke(app, [*args, "--admin", replicas.admin_urls[0]], env=env)
    assert result.exit_code == 2 and "PRODML_ADMIN_TOKEN" in result.stderr, result.output
    url, auth = f"{replicas.admin_urls[0]}/admin/deployment", {"authorization": f"Bearer {TOKEN}"}
    for body, message in [
        (b"{not json", "not valid JSON"),
        (json.dumps(AB).encode(), "with a 'why'"),
        (json.dumps({**AB, "why": "x", "revision": 12345}).encode(), "changed meanwhile"),
        (json.dumps({**AB, "why": "x", "revision": None}).encode(), "changed meanwhile"),
    ]:
        answer = httpx.post(url, content=body, headers=auth, timeout=30)
        assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    unchanged(versions, before)
