"""The public API of prodml.stream, pinned; importing it loads neither mlflow nor training code."""

from __future__ import annotations

import subprocess
import sys

import prodml.stream


def test_the_public_api() -> None:
    assert sorted(prodml.stream.__all__) == ["RunOptions", "StreamOptions", "Worker", "run"]


def test_importing_the_stream_loads_no_registry_or_training_code() -> None:
    code = (
        "import sys, prodml.stream; print(sorted({'mlflow', 'sklearn', 'prodml.train'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
