"""Rollout metrics read through a real Prometheus scraping both replicas equal the replicas' own sums."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from prodml.rollout.analysis import Checks, analyse, scrape
from prodml.rollout.prometheus import query
from tests.conftest import edit_project
from tests.rollout.conftest import Replicas, Versions, load, reset, versions_served
from tests.rollout.test_canary import rollout
from tests.servers import free_port, prometheus_server


@pytest.mark.integration
def test_prometheus_sums_every_replica_as_a_direct_scrape_does(
    versions: Versions, replicas: Replicas
) -> None:
    versions_served(replicas, versions.rows, 60)  # traffic on both replicas, then none
    targets = [url.removeprefix("http://") for url in replicas.urls]
    with prometheus_server(targets, job="churn") as url:
        direct = scrape(replicas.urls)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until Prometheus has scraped both replicas since the traffic
            via = query(url, selector='job="churn"')
            if not via.missing and via.requests == direct.requests:
                break
            time.sleep(0.5)
        assert not via.missing
        assert via.requests == direct.requests and sum(via.requests["1"].values()) >= 60
        assert via.buckets == direct.buckets
        assert via.scores.keys() == direct.scores.keys()
        assert all((via.scores[v] == direct.scores[v]).all() for v in direct.scores)

        other = query(url, selector='job="another-model"')  # the selector keeps other series out
        assert other.requests == {} and "no prodml_variant_requests_total" in other.missing[0]
        bad = query(url, selector="job=")  # PromQL Prometheus refuses: a missing observation, named
        assert bad.missing and "bad_data" in bad.missing[0]


def test_prometheus_that_cannot_be_read_fails_the_window() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    snapshot = query(dead, timeout_s=1)
    assert snapshot.missing and dead in snapshot.missing[0]
    verdict = analyse(snapshot.minus(snapshot), canary="2", primary="1", checks=Checks(min_requests=1))
    assert not verdict.passed


@pytest.mark.integration
def test_a_canary_analysed_through_prometheus_is_promoted(versions: Versions, replicas: Replicas) -> None:
    reset(versions)
    replicas.reload()
    targets = [url.removeprefix("http://") for url in replicas.urls]
    unreachable = f"http://127.0.0.1:{free_port()}"  # read directly, this replica would fail every window
    with prometheus_server(targets, job="churn") as url, load(replicas, versions.rows) as running:
        edit_project(versions.root, rollout__prometheus_url=url, rollout__prometheus_selector='job="churn"')
        try:
            admins = [arg for admin in replicas.admin_urls for arg in ("--admin", admin)]
            done = rollout(
                versions, "canary", "2", "--steps", "100", "--interval", "3s", "--min-requests", "10",
                "--replica", unreachable, *admins,
            )  # fmt: skip
        finally:
            edit_project(versions.root, rollout__prometheus_url=None, rollout__prometheus_selector="")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "promoted" in done.stdout and set(running.statuses) == {200}
    assert versions.store().registry.alias_version(versions.name, "champion").version == "2"
    reset(versions)
    replicas.reload()


def test_prometheus_url_must_be_a_url(tmp_path: Path) -> None:
    from prodml.core.errors import ConfigError
    from prodml.core.project import load_project
    from prodml.data.examples import write_example

    write_example(tmp_path, "breast-cancer")
    edit_project(tmp_path, rollout__prometheus_url="prom:9090")
    with pytest.raises(ConfigError, match="prometheus_url"):
        load_project(tmp_path)
