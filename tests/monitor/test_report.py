"""The HTML report renders with its plots in a real headless Chromium (no network, no CDN)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from prodml.export.drift import PREDICTION
from prodml.monitor.report import render_html, write_report
from prodml.monitor.summary import summarize
from tests.monitor.conftest import DAY, T0, score, world

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _frame(rng: np.random.Generator) -> pd.DataFrame:
    parts = []
    for week, drift in enumerate((0.0, 0.0, 1.0)):
        part = world(rng, 3_000, drift)
        part[PREDICTION] = score(part)
        part["ts"] = T0 + week * 7 * DAY + np.linspace(0, 7 * DAY - 1, 3_000)
        part["label"] = (rng.random(3_000) < part[PREDICTION]).astype(float)
        part["version"] = "3"
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def summary(profile: dict[str, Any]):  # type: ignore[no-untyped-def]
    frame = _frame(np.random.default_rng(5))
    return summarize(
        profile, frame, every="7d", metrics=["roc_auc", "brier"], model="churn v3", source="test"
    )


def test_report_is_self_contained(summary) -> None:  # type: ignore[no-untyped-def]
    html = render_html(summary)
    assert "BREACH" in html
    assert not re.search(r"(src|href)=['\"]?https?://", html)  # nothing fetched from the network
    assert "<script" not in html


@pytest.mark.integration
def test_report_renders_its_plots_in_headless_chromium(summary, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (apt-get install chromium; scripts/setup.sh installs it)"
    html, _ = write_report(summary, tmp_path)
    profile_dir = tmp_path / "chromium-profile"
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout
    figures = re.findall(r"<figure class=\"plot\" data-plot=\"([^\"]+)\"[^>]*>\s*<svg", dom)
    expected = {f"hist-{f}" for f in ("age", "fee", "sessions_30d", "plan", "country", PREDICTION)}
    assert expected | {"drift-over-time", "performance-roc_auc", "performance-brier"} <= set(figures)
    assert dom.count("<path") > 100  # the plots' bars and lines were parsed as SVG elements
    assert 'id="verdict"' in dom and "BREACH" in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1200,2400", html.as_uri()],
        capture_output=True,
        timeout=90,
        check=True,
    )
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2400, 1200)
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # plots, not a blank page
    # the drifted histograms are drawn in red (#cf222e): some pixels near that colour exist
    red = np.abs(pixels[..., :3] - np.array([0xCF, 0x22, 0x2E]) / 255).sum(axis=-1) < 0.1
    assert red.sum() > 500
