"""The CLI is a thin shell: library errors become one line on stderr and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from b2bkg.io import read_pxd, write_file


def run(*args, check=False):
    p = subprocess.run([sys.executable, "-m", "b2bkg.cli.main", *args], capture_output=True, text=True, env=None)
    if check and p.returncode != 0:
        raise AssertionError(p.stderr)
    return p


def test_help_lists_verbs():
    p = run("--help", check=True)
    for verb in ("simulate", "info", "convert", "evaluate"):
        assert verb in p.stdout


def test_console_script_help():
    """The installed entry point, not ``python -m`` (runpy imports modules the entry point must import itself)."""
    code = "import sys; from b2bkg.cli.main import main; sys.argv = ['b2bkg', '--help']; main()"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "simulate" in p.stdout


def test_info_and_convert(tmp_path, tiny_pxd):
    a = tmp_path / "a.h5"
    write_file(a, seed=4, pxd=tiny_pxd)
    p = run("info", str(a), "--json", check=True)
    d = json.loads(p.stdout)
    assert d["n_events"] == tiny_pxd.n_events and d["schema"] == "b2bkg.pxd.digits/1" and d["seed"] == 4
    b = tmp_path / "b.root"
    run("--quiet", "convert", str(a), str(b), check=True)
    assert read_pxd(b) == tiny_pxd


@pytest.mark.parametrize("suffix", [".h5", ".root"])
def test_truncated_input_is_one_line_exit_2(tmp_path, tiny_pxd, suffix):
    a = tmp_path / f"a{suffix}"
    write_file(a, seed=1, pxd=tiny_pxd)
    data = a.read_bytes()
    a.write_bytes(data[: len(data) // 3])
    p = run("info", str(a))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("b2bkg: error:") and str(a) in lines[0]
    assert "Traceback" not in p.stderr
    p = run("--debug", "info", str(a))
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_unknown_verb():
    p = run("frobnicate")
    assert p.returncode == 2 and "No such command" in p.stderr


@pytest.mark.parametrize("suffix", [".h5", ".root"])
def test_merge_concatenates_and_refuses_mismatches(tmp_path, tiny_pxd, tiny_smc, suffix):
    from b2bkg.io import merge, open_file
    from b2bkg.io.events import PxdDigits

    a, b, c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    write_file(a, seed=1, pxd=tiny_pxd, attrs={"simulator_hash": "aaaa"})
    write_file(b, seed=2, pxd=tiny_pxd.slice(0, 1), attrs={"simulator_hash": "aaaa"})
    write_file(c, seed=3, pxd=tiny_pxd, attrs={"simulator_hash": "cccc"})
    out = tmp_path / f"m{suffix}"
    run("--quiet", "merge", str(a), str(b), "--out", str(out), check=True)
    assert read_pxd(out) == PxdDigits.concat([tiny_pxd, tiny_pxd.slice(0, 1)])
    with open_file(out) as f:
        assert f.meta["seed"] == -1 and f.meta["simulator_hash"] == "aaaa"
        assert [m["seed"] for m in json.loads(f.meta["merged_from"])] == [1, 2]
    p = run("merge", str(a), str(c), "--out", str(tmp_path / "x.h5"))
    assert p.returncode == 2 and "different simulator versions" in p.stderr and not (tmp_path / "x.h5").exists()
    merge([a, c], tmp_path / "y.h5", allow_mixed=True)
    assert read_pxd(tmp_path / "y.h5").n_events == 2 * tiny_pxd.n_events
    write_file(tmp_path / "s.h5", seed=1, smc=tiny_smc)
    p = run("merge", str(a), str(tmp_path / "s.h5"), "--out", str(tmp_path / "z.h5"))
    assert p.returncode == 2 and "cannot merge" in p.stderr and len(p.stderr.strip().splitlines()) == 1
