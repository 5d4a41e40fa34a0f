"""``prodml serve`` as a command: what it says when the serve extra is missing or the options are wrong."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prodml.cli import app
from prodml.data.examples import write_example
from tests.servers import free_port


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_example(tmp_path, "churn", customers=50, days=120, seed=1)
    return tmp_path


def test_without_the_serve_extra_it_names_the_pip_command(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if uvicorn were not installed
    result = CliRunner().invoke(app, ["--project", str(project), "serve", "--package", str(project)])
    assert result.exit_code == 5
    assert "optional package 'uvicorn'" in result.output
    assert "hint: pip install 'prodml[serve]'" in result.output  # brackets kept (no rich markup)
    assert "Traceback" not in result.output


def test_tls_needs_both_files(project: Path) -> None:
    result = CliRunner().invoke(app, ["--project", str(project), "serve", "--tls-cert", str(project)])
    assert result.exit_code == 2
    assert "--tls-cert and --tls-key together" in result.output


@pytest.mark.parametrize("option", ["--port", "--grpc-port"])
def test_a_taken_port_is_exit_7_before_serving_is_announced(project: Path, option: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--port": str(free_port()), "--grpc-port": str(free_port()), option: str(port)}
        result = CliRunner().invoke(
            app,
            ["--project", str(project), "serve", "--package", str(project), "--host", "127.0.0.1"]
            + [arg for item in ports.items() for arg in item],
        )
    assert result.exit_code == 7, result.output
    assert f"error: port {port} on 127.0.0.1 is already in use" in result.output
    assert f"hint: stop what listens there or choose {option}" in result.output
    assert "serving" not in result.output and "Traceback" not in result.output
