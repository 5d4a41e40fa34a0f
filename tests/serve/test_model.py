"""The model manager's sizing of ONNX Runtime threads."""

from __future__ import annotations

from prodml.serve.metrics import Metrics


def test_lone_request_threads_are_the_workers_share_of_the_cores_unless_set(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from prodml.core.project import Serve
    from prodml.serve import model as model_module
    from prodml.serve.model import ModelManager

    def manager(**serve: object) -> ModelManager:
        return ModelManager(
            ref=None,
            package_dir=tmp_path,
            cache_dir=tmp_path,
            tracking_uri=None,
            serve=Serve.model_validate(serve),
            metrics=Metrics(),
        )

    monkeypatch.setattr(model_module, "usable_cpus", lambda: 8)
    assert manager().lone_threads() == 4  # at most 4
    assert manager(workers=4).lone_threads() == 2
    assert manager(workers=16).lone_threads() == 1
    assert manager(workers=4, lone_threads=3).lone_threads() == 3


def test_usable_cpus_follow_the_cgroup_quota(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from prodml.serve.model import usable_cpus

    here = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")
    assert usable_cpus(quota) == here
    quota.write_text("100000 100000\n")  # limits.cpu: 1
    assert usable_cpus(quota) == 1
    quota.write_text("50000 100000\n")  # half a CPU still runs one thread
    assert usable_cpus(quota) == 1
    quota.write_text(f"{(here + 8) * 100000} 100000\n")  # a quota above the affinity
    assert usable_cpus(quota) == here
    assert usable_cpus(tmp_path / "absent") == here
