"""The report renders in a real headless browser (Chromium from the system packages). Slow."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from b2bkg.report.html import build_report

    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"pillar": "pxd", "corr_mae": {"value": 0.03, "err": 0.01, "floor": 0.02}}))
    fig, ax = plt.subplots()
    ax.plot(np.arange(10))
    fig.savefig(ev / "plot.png")
    plt.close(fig)
    report = build_report([ev], tmp_path / "report.html", title="browser check")
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    p = subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,900", report.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 5000, p.stderr[-2000:]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "browser check" in dom and "corr_mae" in dom and "data:image/png;base64," in dom
