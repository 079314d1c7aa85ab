"""Dask campaigns: shards on a 2-worker LocalCluster equal one plain generate run, whatever K;
a campaign killed with SIGKILL halfway resumes to the same output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from b2bkg.campaign.dask import CampaignError, load_manifest, merge_shards, plan_shards, run_campaign, sha256_file
from b2bkg.core.errors import ConfigError
from b2bkg.generate import generate

pytestmark = pytest.mark.distributed

N_EVENTS = 1000


@pytest.fixture(scope="module")
def client():
    """One LocalCluster of 2 single-threaded worker processes shared by the module (startup is slow)."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def reference(tiny_run, tmp_path_factory):
    """Events 0..N-1 of one uninterrupted, unsharded generate run on one thread (the truth)."""
    from b2bkg.generate import load_run
    from b2bkg.campaign.dask import shard_suffix

    suffix = shard_suffix(load_run(tiny_run).family)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = generate(tiny_run, N_EVENTS, seed=11, out=tmp_path_factory.mktemp("ref") / f"ref{suffix}")
    finally:
        torch.set_num_threads(old)
    return path


def _concat_events(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-shard arrays; ``*/offsets`` are re-based so they compare with one file's."""
    out = {}
    for k in parts[0]:
        if k.endswith("/offsets"):
            base, segs = 0, [np.zeros(1, np.int64)]
            for p in parts:
                segs.append(p[k][1:] + base)
                base += int(p[k][-1])
            out[k] = np.concatenate(segs)
        else:
            out[k] = np.concatenate([p[k] for p in parts])
    return out


def assert_same_events(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_plan_shards():
    assert plan_shards(10, 3) == [(0, 4), (4, 3), (7, 3)]
    assert plan_shards(5, 5) == [(i, 1) for i in range(5)]
    plan = plan_shards(1001, 7)
    assert sum(n for _, n in plan) == 1001 and all(s2 == s1 + n1 for (s1, n1), (s2, _) in zip(plan, plan[1:]))
    # aligned to the batch size: only the last shard ends off a multiple of 16
    assert plan_shards(100, 3, align=16) == [(0, 48), (48, 32), (80, 20)]
    assert plan_shards(20, 3, align=16) == [(0, 7), (7, 7), (14, 6)]  # fewer batches than shards: unaligned
    for n, k, a in [(1000, 7, 256), (999, 4, 16), (50, 50, 4)]:
        plan = plan_shards(n, k, a)
        assert len(plan) == k and plan[0][0] == 0 and sum(m for _, m in plan) == n and min(m for _, m in plan) >= 1
        assert all(s2 == s1 + n1 for (s1, n1), (s2, _) in zip(plan, plan[1:]))
    for bad in [(0, 1), (5, 0), (3, 4), (2.5, 1), (True, 1), (5, 1, 0)]:
        with pytest.raises(ConfigError):
            plan_shards(*bad)


@pytest.mark.parametrize("n_shards", [7])  # unaligned to the batch; K=4 and K=10 (aligned) below
def test_union_of_shards_is_independent_of_k(tiny_run, reference, client, tmp_path, n_shards, read_events):
    out = tmp_path / "c"
    m = run_campaign(tiny_run, N_EVENTS, n_shards, out, seed=11, client=client, merge=True, log=None)
    assert m["status"] == "done" and m["n_done"] == n_shards and m["events"] == N_EVENTS
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["shard_list"] == m["shard_list"]
    for s in m["shard_list"]:
        assert s["status"] == "done" and s["sha256"] == sha256_file(out / s["file"])
    # both worker processes took part
    assert len({s["worker"] for s in m["shard_list"]}) == 2
    ref = read_events(reference)
    assert_same_events(_concat_events([read_events(out / s["file"]) for s in m["shard_list"]]), ref)
    assert_same_events(read_events(next(out.glob("merged.*"))), ref)
    # a re-run does nothing: every shard done and unchanged
    mtimes = {s["file"]: (out / s["file"]).stat().st_mtime_ns for s in m["shard_list"]}
    m2 = run_campaign(tiny_run, N_EVENTS, n_shards, out, seed=11, client=client, log=None)
    assert {s["file"]: (out / s["file"]).stat().st_mtime_ns for s in m2["shard_list"]} == mtimes


def test_resume_regenerates_missing_and_corrupt_shards(tiny_run, reference, client, tmp_path, read_events):
    out = tmp_path / "c"
    m = run_campaign(tiny_run, N_EVENTS, 4, out, seed=11, client=client, log=None)
    files = [out / s["file"] for s in m["shard_list"]]
    files[1].unlink()
    with open(files[2], "r+b") as f:  # same size, different bytes: only the checksum sees it
        f.seek(os.path.getsize(files[2]) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    before0 = files[0].stat().st_mtime_ns
    msgs = []
    run_campaign(tiny_run, N_EVENTS, 4, out, seed=11, client=client, log=msgs.append)
    assert any("2/4 shards already done" in x for x in msgs)
    assert files[0].stat().st_mtime_ns == before0
    assert_same_events(_concat_events([read_events(p) for p in files]), read_events(reference))


def test_other_campaign_in_same_folder_is_refused(tiny_run, client, tmp_path):
    out = tmp_path / "c"
    run_campaign(tiny_run, 40, 2, out, seed=1, client=client, log=None)
    with pytest.raises(ConfigError, match="seed=1.*seed=2"):
        run_campaign(tiny_run, 40, 2, out, seed=2, client=client, log=None)
    with pytest.raises(ConfigError, match="shards"):
        run_campaign(tiny_run, 40, 3, out, seed=1, client=client, log=None)


def test_failed_shards_are_recorded(tiny_run, client, tmp_path):
    """A shard that fails in a worker is marked failed with its error; the campaign raises one line."""
    out = tmp_path / "c"
    cond = tmp_path / "cond.yaml"
    cond.write_text("lumi: 1.0\n")
    with pytest.raises(CampaignError, match="2 shard\\(s\\) failed.*not conditioned"):
        run_campaign(tiny_run, 40, 2, out, seed=1, client=client, conditions=cond, log=None)
    m = load_manifest(out)
    assert m["status"] == "running" and [s["status"] for s in m["shard_list"]] == ["failed", "failed"]
    assert "ModelError" in m["shard_list"][0]["error"]
    with pytest.raises(CampaignError, match="not done"):
        merge_shards(out)


def test_sigkill_halfway_then_rerun_equals_uninterrupted(tiny_run, reference, client, tmp_path, read_events):
    """Kill the whole campaign process group (client, scheduler, workers) once some but not all
    shards are done; re-running the same command completes it to the uninterrupted output."""
    out = tmp_path / "c"
    n_shards = 10
    argv = [sys.executable, "-m", "b2bkg.cli.main", "--quiet", "campaign", "--model", str(tiny_run), "--events",
            str(N_EVENTS * 20), "--shards", str(n_shards), "--seed", "11", "--out", str(out), "--workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = 0
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and p.poll() is None:
            try:
                done = sum(s["status"] == "done" for s in json.loads((out / "manifest.json").read_text())["shard_list"])
            except (OSError, ValueError):
                done = 0
            if done >= 2:
                break
            time.sleep(0.01)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # client, scheduler and worker processes together
        except ProcessLookupError:
            pass
        p.wait()
    err = p.stderr.read().decode()
    p.stderr.close()
    m = load_manifest(out)
    n_done = sum(s["status"] == "done" for s in m["shard_list"])
    assert 0 < n_done < n_shards, f"kill was not halfway ({n_done}/{n_shards} done): {err[-500:]}"
    assert m["status"] == "running"
    # resume (in this process, on the 2-worker cluster): same events as one uninterrupted run
    m = run_campaign(tiny_run, N_EVENTS * 20, n_shards, out, seed=11, client=client, log=None)
    assert m["status"] == "done"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    got = _concat_events([read_events(out / s["file"]) for s in m["shard_list"]])
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = read_events(generate(tiny_run, N_EVENTS * 20, seed=11, out=tmp_path / f"full{Path(m['shard_list'][0]['file']).suffix}"))
    finally:
        torch.set_num_threads(old)
    assert_same_events(got, full)
    assert_same_events({k: v[:N_EVENTS] for k, v in got.items() if not k.endswith("offsets")},
                       {k: v for k, v in read_events(reference).items() if not k.endswith("offsets")})
