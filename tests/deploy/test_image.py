"""The image's build context without a Docker engine: the wheel builds into it, every COPY source is in
it and survives .dockerignore, and the image runs as non-root with a health check."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from prodml import __version__
from prodml.deploy import DeploySettings, render

ROOT = Path(__file__).resolve().parents[2]


def _included(path: str, ignore: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    keep = True
    for pattern in ignore:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
            keep = negate
    return keep


@pytest.mark.integration
def test_the_wheel_builds_into_the_context_and_every_copy_source_survives(
    settings: DeploySettings, tmp_path: Path
) -> None:
    source = tmp_path / "source"  # a copy: an in-tree build would write build/ into the checkout
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    tmp_path = tmp_path / "context"
    render(settings, "k8s", tmp_path)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("prodml-*.whl")
    assert wheel.name.startswith(f"prodml-{__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"prodml-{__version__}.dist-info/METADATA").decode()
        names = set(archive.namelist())
    assert "Provides-Extra: serve" in metadata and "Provides-Extra: kafka" in metadata
    assert "prodml/cli/main.py" in names and "prodml/serve/server.py" in names

    dockerfile = (tmp_path / "Dockerfile").read_text()
    assert f'"prodml[serve,kafka]=={__version__}"' in dockerfile  # the version the wheel has
    ignore = [line for line in (tmp_path / ".dockerignore").read_text().splitlines() if line]
    sources = [m.group(1) for m in re.finditer(r"^COPY (?!--from)(\S+) ", dockerfile, re.MULTILINE)]
    assert sources == ["wheels/", "prodml.yaml"]
    for source in sources:
        assert (tmp_path / source).exists(), source
        assert _included(source.rstrip("/"), ignore), source
    assert _included(f"wheels/{wheel.name}", ignore)
    assert not _included("terraform/main.tf", ignore)  # nothing else goes to the daemon


def test_the_image_runs_as_non_root_with_a_health_check(settings: DeploySettings, tmp_path: Path) -> None:
    render(settings, "k8s", tmp_path)
    final = (tmp_path / "Dockerfile").read_text().split("\nFROM ")[-1]
    assert "USER 10001:10001" in final
    assert "HEALTHCHECK" in final and "/v2/health/ready" in final
    assert "pip" not in final  # the build tools stay in the build stage
    assert "COPY --from=build /opt/prodml /opt/prodml" in final
