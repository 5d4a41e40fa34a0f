"""``prodml stream run``'s argument errors: a clear message and exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from prodml.cli import app
from tests.stream.conftest import Trained

runner = CliRunner()
TOPICS = ["--brokers", "127.0.0.1:1", "--output-topic", "out", "--dlq-topic", "dlq", "--group", "g"]


def stream(project: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--project", str(project), "stream", "run", *TOPICS, *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_the_same_topic_twice_is_refused(churn_dir: Path) -> None:
    code, output = stream(churn_dir, "--input-topic", "out")
    assert code == 2
    assert "the input, output and dead-letter topics must differ" in output


def test_a_kafka_setting_without_a_value_is_refused(churn_dir: Path) -> None:
    code, output = stream(churn_dir, "--input-topic", "in", "--kafka-config", "session.timeout.ms")
    assert code == 2
    assert "expected KEY=VALUE" in output


def test_model_and_package_together_are_refused(churn_dir: Path, tmp_path: Path) -> None:
    code, output = stream(
        churn_dir, "--input-topic", "in", "--model", "churn@champion", "--package", str(tmp_path)
    )
    assert code == 2
    assert "give --model or --package, not both" in output


def test_a_setting_librdkafka_refuses_is_named(trained: Trained) -> None:
    env = {"PRODML_TRACKING_URI": trained.tracking}
    args = [
        "--project",
        str(trained.root),
        "stream",
        "run",
        *TOPICS,
        "--input-topic",
        "in",
        "--no-log-requests",
    ]
    result = runner.invoke(app, [*args, "--kafka-config", "no.such.setting=1"], env=env)
    assert result.exit_code == 2, result.output
    assert "librdkafka refuses the producer settings" in result.output
    assert "Traceback" not in result.output
