"""Where a file or a run came from: the source commit and a fingerprint of the simulator's physics.

A git commit alone does not pin what a truth simulator did: files are often simulated from a
modified working tree or from an installed copy with no git at all. So every simulator also
records ``simulator_hash``: a SHA-256 over the *source bytes* of the modules that define its
physics plus its resolved configuration. Two truth files with the same ``simulator_hash`` came
from the same physics, whatever the commit; a metric between files with different hashes compares
two simulators, and ``b2bkg evaluate`` says so.

Example:
    >>> h = simulator_hash("pxd", {"lumi_scale": 1.0})
    >>> len(h)
    16
"""

from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
from functools import lru_cache
from pathlib import Path

__all__ = ["git_hash", "simulator_hash", "SIMULATOR_MODULES", "physics_mismatch"]

#: modules whose source defines each truth simulator's physics (models and metrics excluded)
SIMULATOR_MODULES: dict[str, tuple[str, ...]] = {
    "pxd": ("b2bkg.pxd.simulate", "b2bkg.pxd.geometry", "b2bkg.pxd.detector", "b2bkg.core.conditions"),
    "ecl": ("b2bkg.ecl.simulate", "b2bkg.ecl.geometry", "b2bkg.ecl.detector", "b2bkg.ecl.pulse",
            "b2bkg.core.conditions"),
    "smc": ("b2bkg.selmc.simulate", "b2bkg.selmc.generate", "b2bkg.selmc.decays", "b2bkg.selmc.fragment",
            "b2bkg.selmc.kinematics", "b2bkg.selmc.skim", "b2bkg.selmc.counter_rng"),
}


@lru_cache(maxsize=1)
def git_hash() -> str:
    """Commit of the b2bkg source tree (``<sha>+dirty`` if tracked files are modified); ``""``
    when the package is not in a git checkout or git is missing."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


@lru_cache(maxsize=None)
def _source_digest(pillar: str) -> bytes:
    h = hashlib.sha256()
    for name in SIMULATOR_MODULES[pillar]:
        mod = importlib.import_module(name)
        h.update(name.encode())
        h.update(Path(mod.__file__).read_bytes())
    return h.digest()


def simulator_hash(pillar: str, config: dict | None = None) -> str:
    """16-hex-digit fingerprint of ``pillar``'s truth simulator ("pxd", "ecl" or "smc"): its
    source modules (:data:`SIMULATOR_MODULES`) and the resolved ``config`` (JSON-able dict)."""
    if pillar not in SIMULATOR_MODULES:
        raise ValueError(f"unknown simulator {pillar!r} (known: {', '.join(SIMULATOR_MODULES)})")
    h = hashlib.sha256(_source_digest(pillar))
    h.update(json.dumps(config or {}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def physics_mismatch(metas: dict[str, dict]) -> str | None:
    """One line if files (label -> metadata dict) carry different ``simulator_hash`` values, else
    None. Files without the attribute (older files, or real data) are not compared."""
    seen = {label: m.get("simulator_hash") for label, m in metas.items() if m.get("simulator_hash")}
    if len(set(seen.values())) <= 1:
        return None
    parts = ", ".join(f"{label} {h}" for label, h in seen.items())
    return f"files come from different simulator versions ({parts}): metrics compare two simulators"
