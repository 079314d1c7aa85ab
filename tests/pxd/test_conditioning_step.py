"""The reproduce step of the conditioning check runs end to end at tiny sizes (slow: trains pxd-fast)."""

from __future__ import annotations

import json

import pytest

from b2bkg.demo import COND_HELD_OUT, DemoContext, DemoSizes, step_pxd_conditioning


def test_skipped_in_the_demo(tmp_path):
    ctx = DemoContext(tmp_path, 1)
    step_pxd_conditioning(ctx)
    assert "pxd-conditioning" in ctx.skipped and not ctx.report_inputs


@pytest.mark.slow
def test_reproduce_step_writes_table_and_plot(tmp_path):
    ctx = DemoContext(tmp_path, 3, DemoSizes(pxd_cond_train=40, pxd_cond_test=6))
    step_pxd_conditioning(ctx)
    out = tmp_path / "eval" / "pxd_conditioning"
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["conditioning"]) == list(COND_HELD_OUT)
    assert all(abs(r["occupancy_bias_pct"]) < 30 for r in m["conditioning"].values())
    assert (out / "conditioning.png").stat().st_size > 5000
    assert ctx.report_inputs == [out]
