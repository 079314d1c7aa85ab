"""The Belle II generic decay table (``DECAY_BELLE2.DEC`` shipped with decaylanguage) as flat arrays.

:func:`load_decay_table` parses the file once with ``decaylanguage.DecFileParser`` (aliases,
``ChargeConj`` / ``CDecay`` charge conjugates and ``Define`` s resolved by the parser), keeps every
particle reachable from Y(4S), tau and the fragmentation hadrons, takes masses, widths and
lifetimes from the ``particle`` package (PDG), and stores a compact table that vectorized code
indexes with integer particle rows (``pid``) and channel rows. The parsed table is cached as an
``.npz`` under ``$B2BKG_CACHE_DIR`` (default ``~/.cache/b2bkg``), keyed by the hash of the DEC file
and the versions involved: parsing takes ~2 s, loading the cache ~10 ms.

What is kept of each channel: its branching fraction (renormalized over the retained channels
of the mother), the daughters, and whether it is a quark-level (``PYTHIA``-model) channel whose
partons are fragmented (:mod:`b2bkg.selmc.fragment`). Decay models (helicity amplitudes, form
factors, PHOTOS) are dropped: every decay is isotropic phase space. Channels with an unknown
particle or an unfragmentable parton content are dropped and counted in ``meta``.

Example:
    >>> t = load_decay_table()
    >>> [round(float(b), 3) for b in t.channel_bfs("Upsilon(4S)")[:2]]
    [0.515, 0.483]
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from b2bkg.core.errors import ConfigError

__all__ = [
    "STABLE_PDG", "DecayTable", "dec_file_path", "load_decay_table", "build_decay_table",
    "SHAPE_FIXED", "SHAPE_BW", "SHAPE_GAUSS", "KIND_EXPLICIT", "KIND_PARTONS",
]

TABLE_VERSION = 4
#: |PDG| of particles never decayed by the generator (detector-stable).
STABLE_PDG = frozenset({11, 12, 13, 14, 16, 22, 130, 211, 321, 2112, 2212})
ROOTS = ("Upsilon(4S)", "B0", "anti-B0", "B+", "B-", "tau-", "tau+", "D0", "anti-D0", "D+", "D-", "D_s+", "D_s-")
#: Documentation-only rows (never decayed by the table): virtual photon, string, quarks.
DOC_PDG = {"vpho": 10022, "string": 92, "d": 1, "u": 2, "s": 3, "c": 4, "anti-d": -1, "anti-u": -2, "anti-s": -3, "anti-c": -4}
# pseudo-particles of inclusive models: (pdg, mean GeV, sigma GeV, lo, hi, charge3)
PSEUDO = {
    "Xu0": (43, 1.5, 0.6, 0.30, 4.5, 0), "Xu+": (44, 1.5, 0.6, 0.30, 4.5, 3), "Xu-": (-44, 1.5, 0.6, 0.30, 4.5, -3),
    "Xsd": (30343, 2.0, 0.5, 1.1, 4.0, 0), "anti-Xsd": (-30343, 2.0, 0.5, 1.1, 4.0, 0),
    "Xsu": (30353, 2.0, 0.5, 1.1, 4.0, 3), "anti-Xsu": (-30353, 2.0, 0.5, 1.1, 4.0, -3),
    "Xss": (30363, 2.0, 0.5, 1.2, 4.0, 0), "anti-Xss": (-30363, 2.0, 0.5, 1.2, 4.0, 0),
}
SHAPE_FIXED, SHAPE_BW, SHAPE_GAUSS = 0, 1, 2
KIND_EXPLICIT, KIND_PARTONS = 0, 1
BROAD_GEV = 1e-3  # resonances wider than this get a sampled (truncated Breit-Wigner) mass
N_WIDTHS = 3.0


def dec_file_path() -> Path:
    """Path of ``DECAY_BELLE2.DEC`` inside the installed decaylanguage package."""
    try:
        p = importlib.resources.files("decaylanguage") / "data" / "DECAY_BELLE2.DEC"
    except ModuleNotFoundError as e:
        raise ConfigError("selective MC needs decaylanguage: pip install 'b2bkg[selmc]'") from e
    return Path(str(p))


@dataclass
class DecayTable:
    """Flat decay table.

    Particle rows (P): ``names`` (DEC names; aliases are separate rows), ``pdg`` int32, ``mass``,
    ``width`` (GeV), ``mass_lo``/``mass_hi`` (GeV, sampling range), ``shape`` (0 fixed, 1 Breit-Wigner,
    2 Gaussian), ``ctau`` (cm, proper), ``charge3`` (charge x 3), ``stable`` / ``doc`` (bool),
    ``ch_first`` / ``ch_count`` (channel rows).
    Channel rows (C): ``ch_parent``, ``ch_bf`` (renormalized), ``ch_cum`` (cumulative within the
    parent, last = 1), ``ch_kind`` (0 explicit, 1 partons), ``ch_threshold`` (GeV), ``ch_dfirst`` /
    ``ch_dcount`` into ``dau`` (pid of explicit daughters), ``ch_nsing`` and ``ch_sing`` (C, 2, 2)
    colour singlets (A, B parton codes) of parton channels.
    """

    names: np.ndarray
    pdg: np.ndarray
    mass: np.ndarray
    width: np.ndarray
    mass_lo: np.ndarray
    mass_hi: np.ndarray
    shape: np.ndarray
    ctau: np.ndarray
    charge3: np.ndarray
    stable: np.ndarray
    doc: np.ndarray
    ch_first: np.ndarray
    ch_count: np.ndarray
    ch_parent: np.ndarray
    ch_bf: np.ndarray
    ch_cum: np.ndarray
    ch_kind: np.ndarray
    ch_threshold: np.ndarray
    ch_dfirst: np.ndarray
    ch_dcount: np.ndarray
    dau: np.ndarray
    ch_nsing: np.ndarray
    ch_sing: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self._by_name = {str(n): i for i, n in enumerate(self.names)}
        base = {}
        for i, (n, p) in enumerate(zip(self.names, self.pdg)):
            if not self.is_alias(i) and int(p) not in base:
                base[int(p)] = i
        self._by_pdg = base
        self.max_threshold = np.zeros(len(self.names))
        if len(self.ch_parent):
            np.maximum.at(self.max_threshold, self.ch_parent, self.ch_threshold)
        # fixed-mass particles: channels closed at the nominal mass get no weight (precomputed here,
        # so only broad resonances need the per-particle masking at generation time)
        par = self.ch_parent
        w = self.ch_bf.copy()
        if len(par):
            closed = (self.shape[par] == SHAPE_FIXED) & (self.ch_threshold >= self.mass[par])
            w_open = np.where(closed, 0.0, w)
            tot = np.bincount(par, weights=w_open, minlength=len(self.names))
            w = np.where(tot[par] > 0, w_open / np.where(tot[par] > 0, tot[par], 1.0), w)
            cum = np.cumsum(w)
            start = (cum - w)[self.ch_first[par]]
            cum = cum - start
            last = self.ch_first[par] + self.ch_count[par] - 1
            cum[last] = 1.0
        else:
            cum = w
        self.gcum = np.minimum(cum, 1.0) + par.astype(np.float64)
        self.open_max_threshold = np.zeros(len(self.names))
        if len(par):
            np.maximum.at(self.open_max_threshold, par, np.where(w > 0, self.ch_threshold, 0.0))
        self._flavour = None

    @property
    def n_particles(self) -> int:
        return len(self.names)

    def is_alias(self, pid: int) -> bool:
        return str(self.names[pid]) in self.meta.get("aliases", {})

    def pid(self, name: str) -> int:
        """Row of a DEC particle name (e.g. ``"anti-B0"``)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(f"decay table: unknown particle name {name!r}") from None

    def pid_of_pdg(self, pdg: int) -> int | None:
        """Row of the (non-alias) particle with PDG code ``pdg``, or None."""
        return self._by_pdg.get(int(pdg))

    def pdg_to_pid_array(self, pdg: np.ndarray) -> np.ndarray:
        """Vectorized PDG -> pid (-1 where unknown)."""
        keys = np.array(sorted(self._by_pdg), np.int64)
        vals = np.array([self._by_pdg[k] for k in keys], np.int64)
        pdg = np.asarray(pdg, np.int64)
        j = np.clip(np.searchsorted(keys, pdg), 0, len(keys) - 1)
        return np.where(keys[j] == pdg, vals[j], -1)

    def channels(self, name: str) -> list[tuple[float, list[str], list[int]]]:
        """(BF, daughter names, partons) of each retained channel of ``name``."""
        p = self.pid(name)
        out = []
        for c in range(self.ch_first[p], self.ch_first[p] + self.ch_count[p]):
            d = self.dau[self.ch_dfirst[c] : self.ch_dfirst[c] + self.ch_dcount[c]]
            parts = [int(x) for s in range(self.ch_nsing[c]) for x in self.ch_sing[c, s]]
            out.append((float(self.ch_bf[c]), [str(self.names[i]) for i in d], parts))
        return out

    def channel_bfs(self, name: str) -> np.ndarray:
        p = self.pid(name)
        return self.ch_bf[self.ch_first[p] : self.ch_first[p] + self.ch_count[p]]

    @property
    def flavour(self):
        """:class:`b2bkg.selmc.fragment.FlavourTables` in this table's pid numbering (lazy)."""
        if self._flavour is None:
            from .fragment import FlavourTables

            decayable = (self.ch_count > 0) | np.isin(np.abs(self.pdg), list(STABLE_PDG))
            self._flavour = FlavourTables(self.pid_of_pdg, self.mass, usable=lambda pid: bool(decayable[pid]))
        return self._flavour

    def arrays(self) -> dict[str, np.ndarray]:
        keys = [k for k in self.__dataclass_fields__ if k != "meta"]
        return {k: getattr(self, k) for k in keys}


def _cache_dir() -> Path:
    return Path(os.environ.get("B2BKG_CACHE_DIR", Path.home() / ".cache" / "b2bkg"))


def _cache_key(path: Path) -> str:
    import decaylanguage
    import particle

    h = hashlib.sha256(path.read_bytes())
    h.update(f"{TABLE_VERSION}|{decaylanguage.__version__}|{particle.__version__}".encode())
    return h.hexdigest()[:16]


_TABLES: dict[str, DecayTable] = {}


def load_decay_table(path: str | Path | None = None, *, cache: bool = True) -> DecayTable:
    """The decay table of ``path`` (default: decaylanguage's ``DECAY_BELLE2.DEC``), cached on disk.

    ``meta`` records ``parse_s`` (seconds spent parsing; 0 when loaded from the cache), ``load_s``,
    ``source`` and the counts of dropped channels.
    """
    path = Path(path) if path is not None else dec_file_path()
    if not path.is_file():
        raise ConfigError(f"decay file {path}: not found")
    key = _cache_key(path)
    if key in _TABLES:
        return _TABLES[key]
    t0 = time.perf_counter()
    cfile = _cache_dir() / f"decay_table_{key}.npz"
    table = None
    if cache and cfile.is_file():
        try:
            with np.load(cfile, allow_pickle=False) as z:
                arrs = {k: z[k] for k in z.files if k != "meta"}
                meta = json.loads(str(z["meta"]))
            table = DecayTable(**arrs, meta=meta)
            table.meta["parse_s"] = 0.0
        except (OSError, ValueError, KeyError, TypeError):
            table = None
    if table is None:
        table = build_decay_table(path)
        if cache:
            try:
                cfile.parent.mkdir(parents=True, exist_ok=True)
                tmp = cfile.with_suffix(f".tmp{os.getpid()}.npz")
                np.savez(tmp, meta=np.array(json.dumps(table.meta)), **table.arrays())
                os.replace(tmp, cfile)
            except OSError:
                pass
    table.meta["load_s"] = time.perf_counter() - t0
    table.meta["source"] = str(path)
    _TABLES[key] = table
    return table


def _parton_code(name: str, bimap) -> int | None:
    """PDG code if ``name`` is a parton (quark, diquark, gluon, random flavour), else None."""
    if name in ("rndmflav", "anti-rndmflav"):
        return 82 if name == "rndmflav" else -82
    try:
        c = int(bimap[name])
    except Exception:
        return None
    a = abs(c)
    if 1 <= a <= 8 or a == 21 or (1000 <= a < 6000 and (a // 10) % 10 == 0):
        return c
    return None


def build_decay_table(path: Path) -> DecayTable:
    """Parse ``path`` with decaylanguage and build the table (no cache)."""
    from decaylanguage import DecFileParser
    from particle import Particle
    from particle.converters.evtgen import EvtGenName2PDGIDBiMap as bimap

    from .fragment import fragmentation_pdgs, resolve_singlets

    t0 = time.perf_counter()
    parser = DecFileParser(str(path))
    parser.parse()
    parse_s = time.perf_counter() - t0
    aliases = parser.dict_aliases()
    mothers = set(parser.list_decay_mother_names())
    raw: dict[str, list] = {}

    def modes(name):
        if name in raw:
            return raw[name]
        src = name if name in mothers else (aliases.get(name) if aliases.get(name) in mothers else None)
        out = []
        if src is not None:
            for d in parser._find_decay_modes(src):
                dd = parser._decay_mode_details(d, display_photos_keyword=False)
                out.append((float(dd["bf"]), list(dd["fs"]), str(dd["model"])))
        raw[name] = out
        return out

    props: dict[str, tuple] = {}

    def prop(name):
        """(pdg, mass, width, ctau_cm, charge3, shape, lo, hi) or None."""
        if name in props:
            return props[name]
        base = aliases.get(name, name)
        val = None
        if base in PSEUDO:
            pdg, mu, sig, lo, hi, q3 = PSEUDO[base]
            val = (pdg, mu, sig, 0.0, q3, SHAPE_GAUSS, lo, hi)
        elif base in DOC_PDG:
            pdg = DOC_PDG[base]
            q3 = {1: -1, 2: 2, 3: -1, 4: 2}.get(abs(pdg), 0) * (1 if pdg > 0 else -1)
            val = (pdg, 0.0, 0.0, 0.0, q3, SHAPE_FIXED, 0.0, 0.0)
        else:
            try:
                pdg = int(bimap[base])
                p = Particle.from_pdgid(pdg)
                if p.mass is not None or abs(pdg) in (12, 14, 16):
                    m = (p.mass or 0.0) / 1000.0
                    w = (p.width or 0.0) / 1000.0
                    ct = p.ctau / 10.0 if (p.ctau is not None and np.isfinite(p.ctau)) else np.inf
                    if w > 0 and not np.isfinite(ct):
                        ct = 0.0
                    shape = SHAPE_BW if w > BROAD_GEV else SHAPE_FIXED
                    val = (pdg, m, w, ct, int(p.three_charge or 0), shape, m - N_WIDTHS * w if shape else m, m + N_WIDTHS * w if shape else m)
            except Exception:
                val = None
        props[name] = val
        return val

    pdg2name = {}
    frag_names = []
    for pdg in sorted(fragmentation_pdgs()):
        try:
            n = str(bimap[_pdgid(pdg)])
        except Exception:
            continue
        frag_names.append(n)
        pdg2name[pdg] = n
    # reachability
    names: list[str] = []
    seen = set()
    queue = list(ROOTS) + frag_names + list(DOC_PDG)
    channels: dict[str, list] = {}
    dropped = {"unknown_particle": 0, "bad_partons": 0, "zero_bf": 0}
    while queue:
        n = queue.pop(0)
        if n in seen:
            continue
        seen.add(n)
        pr = prop(n)
        if pr is None:
            continue
        names.append(n)
        if abs(pr[0]) in STABLE_PDG or n in DOC_PDG:
            continue
        kept = []
        for bf, fs, _model in modes(n):
            if bf <= 0:
                dropped["zero_bf"] += 1
                continue
            parts = [_parton_code(x, bimap) for x in fs]
            partons = [c for c in parts if c is not None]
            daus = [x for x, c in zip(fs, parts) if c is None]
            if any(prop(x) is None for x in daus):
                dropped["unknown_particle"] += 1
                continue
            sing = resolve_singlets(partons) if partons else []
            if sing is None or (not daus and not sing):
                dropped["bad_partons"] += 1
                continue
            if not sing and sum(prop(x)[4] for x in daus) != pr[4]:
                dropped["charge_violating"] = dropped.get("charge_violating", 0) + 1
                continue
            kept.append((bf, daus, sing))
            queue.extend(daus)
        channels[n] = kept
    # particles that need a decay but have none -> drop channels producing them (iterate)
    def needs_decay(n):
        pr = prop(n)
        return not (abs(pr[0]) in STABLE_PDG or n in DOC_PDG) and (pr[3] < 100.0)

    dead = {n for n in names if needs_decay(n) and not channels.get(n)}
    for _ in range(10):
        changed = False
        for n in names:
            if n in dead or n not in channels:
                continue
            keep = [c for c in channels[n] if not any(d in dead for d in c[1])]
            if len(keep) != len(channels[n]):
                dropped["unknown_particle"] += len(channels[n]) - len(keep)
                channels[n] = keep
                changed = True
                if not keep and needs_decay(n):
                    dead.add(n)
        if not changed:
            break
    P = len(names)
    idx = {n: i for i, n in enumerate(names)}
    pdg = np.array([prop(n)[0] for n in names], np.int32)
    mass = np.array([prop(n)[1] for n in names])
    width = np.array([prop(n)[2] for n in names])
    ctau = np.array([prop(n)[3] for n in names])
    charge3 = np.array([prop(n)[4] for n in names], np.int32)
    shape = np.array([prop(n)[5] for n in names], np.int8)
    lo = np.array([prop(n)[6] for n in names])
    hi = np.array([prop(n)[7] for n in names])
    doc = np.array([n in DOC_PDG for n in names])
    stable = np.array([(abs(prop(n)[0]) in STABLE_PDG) or (n in DOC_PDG) or not channels.get(n) for n in names])
    # channel arrays
    ch_parent, ch_bf, ch_kind, ch_dfirst, ch_dcount, ch_nsing, ch_sing, dau = [], [], [], [], [], [], [], []
    ch_first = np.zeros(P, np.int64)
    ch_count = np.zeros(P, np.int64)
    for i, n in enumerate(names):
        ch = channels.get(n, []) if not stable[i] else []
        ch_first[i] = len(ch_parent)
        ch_count[i] = len(ch)
        tot = sum(c[0] for c in ch)
        for bf, daus, sing in ch:
            ch_parent.append(i)
            ch_bf.append(bf / tot)
            ch_kind.append(KIND_PARTONS if sing else KIND_EXPLICIT)
            ch_dfirst.append(len(dau))
            ch_dcount.append(len(daus))
            dau.extend(idx[d] for d in daus)
            s = np.zeros((2, 2), np.int64)
            for k, (a, b) in enumerate(sing):
                s[k] = (a, b)
            ch_sing.append(s)
            ch_nsing.append(len(sing))
    ch_parent = np.array(ch_parent, np.int64)
    ch_bf = np.array(ch_bf)
    ch_cum = np.zeros_like(ch_bf)
    for i in range(P):
        a, b = ch_first[i], ch_first[i] + ch_count[i]
        if b > a:
            ch_cum[a:b] = np.cumsum(ch_bf[a:b])
            ch_cum[b - 1] = 1.0
    table = DecayTable(
        names=np.array(names), pdg=pdg, mass=mass, width=width, mass_lo=lo, mass_hi=hi, shape=shape,
        ctau=ctau, charge3=charge3, stable=stable, doc=doc, ch_first=ch_first, ch_count=ch_count,
        ch_parent=ch_parent, ch_bf=ch_bf, ch_cum=ch_cum, ch_kind=np.array(ch_kind, np.int8),
        ch_threshold=np.zeros(len(ch_parent)), ch_dfirst=np.array(ch_dfirst, np.int64),
        ch_dcount=np.array(ch_dcount, np.int64), dau=np.array(dau, np.int64),
        ch_nsing=np.array(ch_nsing, np.int64), ch_sing=np.array(ch_sing, np.int64).reshape(-1, 2, 2),
        meta={"aliases": {k: v for k, v in aliases.items() if k in idx}, "dropped": dropped, "parse_s": parse_s},
    )
    # thresholds and mass ranges (a few fixed-point passes: thresholds use daughters' lower masses)
    fl = table.flavour
    sing_min = np.zeros(len(ch_parent))
    for c in range(len(ch_parent)):
        for k in range(table.ch_nsing[c]):
            sing_min[c] += fl.lightest_singlet_mass(*table.ch_sing[c, k])
    seg = np.repeat(np.arange(len(ch_parent)), table.ch_dcount)
    for _ in range(4):
        thr = sing_min + np.bincount(seg, weights=table.mass_lo[table.dau], minlength=len(ch_parent))
        table.ch_threshold = thr
        min_thr = np.full(P, np.inf)
        np.minimum.at(min_thr, ch_parent, thr)
        broad = table.shape > 0
        new_lo = np.where(broad, np.maximum(table.mass_lo, np.where(np.isfinite(min_thr), min_thr + 1e-4, 0.0)), table.mass_lo)
        table.mass_lo = np.where(broad, np.minimum(new_lo, table.mass_hi - 1e-4), table.mass_lo)
    table.__post_init__()
    return table


def _pdgid(pdg: int):
    from particle import PDGID

    return PDGID(pdg)
