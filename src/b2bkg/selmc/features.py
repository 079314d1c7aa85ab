"""Network inputs of selective MC: per-event particle tensors and decay-string tokens.

Everything here reads only the *generator-level* particles of an :class:`~b2bkg.io.SmcEvents`
(``pdg``, ``mother``, four-momentum, production vertex and time); the skim emulator's outputs
(``passed_*``, ``pass_prob_*``, ``mbc_*`` ...) are never touched, so a score built from these
features cannot peek at the label.

Vocabulary (one for PDG codes, mother PDG codes and decay-string tokens): index 0 = padding,
1 = unknown PDG code, 2 = "no mother" (primaries), 3 = ``(`` and 4 = ``)`` of the decay string,
then the sorted PDG codes of the decay table, the fragmentation hadrons and the documentation
codes (partons, ``string``, ``vpho``). The code list travels with the trained network (a buffer of
the model, saved in its safetensors), so a run folder keeps working if the table grows.

Particle features (``x``, float32, F = :data:`N_PARTICLE_FEATURES` per particle), in this order:
``px, py, pz, E`` (GeV, lab), ``pT`` (GeV), ``cos(theta)``, ``log(1 + p / GeV)``,
``asinh(vx / 0.01 cm), asinh(vy / 0.01 cm), asinh(vz / 0.01 cm)`` (production vertex),
``asinh(t / 0.001 ns)`` (production time), ``number of daughters / 4``, ``depth in the tree / 4``,
``final state`` (1 if no daughters), then three detector-acceptance summaries of the particle's
decay tree (:func:`visibility`): ``visible`` (a final-state e, mu, pi, K, p with pT > 0.1 GeV in
17-150 deg or a photon above 30 MeV in 12.4-155.1 deg), ``visible descendants / 10`` and
``invisible energy fraction`` (energy of final-state descendants the detector cannot use: neutrinos,
K_L, neutrons, particles outside acceptance, over the particle's energy; for a final-state particle
1 - visible). A B whose invisible fraction is ~0 can become a correctly reconstructed tag; these
are functions of the generator-level tree only. The asinh compresses vertices from 1 um to metres (K_L, K_S).

With ``tag_features=True`` seven more columns follow (:data:`TAG_FEATURE_NAMES`, from
:func:`b2bkg.selmc.tagtruth.tag_reconstructibility`: whether the particle's *true* decay matches
one of the FEI-like lists' modes / tag channels and is reconstructible, its expected detection
probability, the matched channel prior on B mesons, then three per-event values repeated on every
particle so that average pools see them exactly: the best correctly-reconstructible B0 and B+ tag
strength and the number of reconstructible charm mesons / 4).

Example:
    >>> from b2bkg.selmc.simulate import iter_smc_chunks
    >>> ev = next(iter_smc_chunks(3, seed=1, chunk_size=3, skim=False))
    >>> f = event_features(ev, max_particles=64, max_tokens=128)
    >>> f["pdg"].shape, f["x"].shape, f["tokens"].shape
    ((3, 64), (3, 64, 17), (3, 128))
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import SmcEvents

__all__ = [
    "PAD", "UNK", "NO_MOTHER", "OPEN_TOKEN", "CLOSE_TOKEN", "N_SPECIAL", "N_PARTICLE_FEATURES", "FEATURE_NAMES",
    "TAG_FEATURE_NAMES", "n_particle_features",
    "default_vocabulary", "pdg_to_index", "tree_structure", "visibility", "event_features", "labels",
]

PAD, UNK, NO_MOTHER, OPEN_TOKEN, CLOSE_TOKEN = 0, 1, 2, 3, 4
N_SPECIAL = 5
FEATURE_NAMES = ("px", "py", "pz", "energy", "pt", "cos_theta", "log1p_p", "asinh_vx", "asinh_vy", "asinh_vz",
                 "asinh_time", "n_daughters", "depth", "final_state", "visible", "n_visible_desc", "invisible_frac")
N_PARTICLE_FEATURES = len(FEATURE_NAMES)
TAG_FEATURE_NAMES = ("reco_match", "reco_ok", "reco_eff", "tag_prior", "ev_tag_b0", "ev_tag_bplus", "ev_n_reco_charm")


def n_particle_features(tag_features: bool = False) -> int:
    """F, the number of particle feature columns of :func:`event_features`."""
    return N_PARTICLE_FEATURES + (len(TAG_FEATURE_NAMES) if tag_features else 0)
VERTEX_SCALE_CM = 0.01
TIME_SCALE_NS = 0.001


@lru_cache(maxsize=1)
def default_vocabulary() -> np.ndarray:
    """Sorted unique PDG codes known to the generator, shape (V,), int64 (V ~ 250)."""
    from .decays import DOC_PDG, load_decay_table
    from .fragment import fragmentation_pdgs

    t = load_decay_table()
    codes = set(np.asarray(t.pdg, np.int64).tolist()) | {int(c) for c in fragmentation_pdgs()}
    codes |= {int(c) for c in DOC_PDG.values()} | {300553, 21, 92, 10022}
    out = np.array(sorted(codes), np.int64)
    out.setflags(write=False)
    return out


def pdg_to_index(pdg: np.ndarray, vocab: np.ndarray) -> np.ndarray:
    """Embedding index of each PDG code: ``N_SPECIAL + position`` in ``vocab``, :data:`UNK` if absent.

    Args:
        pdg: PDG codes, any shape, integer.
        vocab: sorted PDG codes, shape (V,).
    Returns:
        int64 indices of ``pdg``'s shape, in ``[1, N_SPECIAL + V)``.
    """
    pdg = np.asarray(pdg, np.int64)
    pos = np.searchsorted(vocab, pdg)
    pos_c = np.minimum(pos, len(vocab) - 1)
    found = vocab[pos_c] == pdg if len(vocab) else np.zeros(pdg.shape, bool)
    return np.where(found, N_SPECIAL + pos_c, UNK).astype(np.int64)


def tree_structure(events: SmcEvents) -> tuple[np.ndarray, np.ndarray]:
    """Number of daughters and depth (0 for primaries) of every particle, both (n_particles,) int64."""
    off = events.offsets
    n_part = int(off[-1])
    evi = np.repeat(np.arange(events.n_events), np.diff(off))
    mother = events.particles["mother"].astype(np.int64)
    gm = np.where(mother >= 0, off[evi] + mother, -1)  # global mother index
    n_dau = np.bincount(gm[gm >= 0], minlength=n_part).astype(np.int64)
    depth = np.zeros(n_part, np.int64)
    anc = gm.copy()
    for _ in range(64):  # tree depth is bounded (~10 in practice)
        has = anc >= 0
        if not has.any():
            break
        depth += has
        anc = np.where(has, gm[np.maximum(anc, 0)], -1)
    return n_dau, depth


def flat_tree(events: SmcEvents) -> dict[str, np.ndarray]:
    """Flat views of the decay trees of ``events``, each (n_particles,): ``evi`` (event of the
    particle), ``gm`` (global index of the mother, -1 for none), ``leaf`` (no daughters), ``apdg``
    (abs PDG id), ``px, py, pz, e`` (GeV, float64), ``pt`` (GeV) and ``theta`` (deg)."""
    off = events.offsets
    n_part = int(off[-1])
    evi = np.repeat(np.arange(events.n_events), np.diff(off))
    P = events.particles
    mother = P["mother"].astype(np.int64)
    gm = np.where(mother >= 0, off[evi] + np.maximum(mother, 0), -1)
    leaf = np.bincount(gm[gm >= 0], minlength=n_part) == 0
    px, py, pz, e = (P[k].astype(np.float64) for k in ("px", "py", "pz", "energy"))
    pt = np.hypot(px, py)
    return {"evi": evi, "gm": gm, "leaf": leaf, "apdg": np.abs(P["pdg"].astype(np.int64)), "px": px, "py": py, "pz": pz,
            "e": e, "pt": pt, "theta": np.degrees(np.arctan2(pt, pz))}


def visibility(events: SmcEvents) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Acceptance summaries of every particle (see the module docstring), each (n_particles,) float64:
    ``visible`` (0/1), number of visible final-state descendants (itself for a final-state particle)
    and the invisible fraction of its energy."""
    t = flat_tree(events)
    gm, leaf, apdg, e, pt, theta = t["gm"], t["leaf"], t["apdg"], t["e"], t["pt"], t["theta"]
    charged = np.isin(apdg, (11, 13, 211, 321, 2212)) & (pt > 0.1) & (theta > 17.0) & (theta < 150.0)
    photon = (apdg == 22) & (e > 0.03) & (theta > 12.4) & (theta < 155.1)
    vis = (leaf & (charged | photon)).astype(np.float64)
    inv_e = np.where(leaf, e * (1.0 - vis), 0.0)
    n_vis, e_inv = vis.copy(), inv_e.copy()
    anc = gm.copy()
    for _ in range(64):
        has = anc >= 0
        if not has.any():
            break
        np.add.at(n_vis, anc[has], vis[has])
        np.add.at(e_inv, anc[has], inv_e[has])
        anc = np.where(has, gm[np.maximum(anc, 0)], -1)
    return vis, n_vis, np.clip(np.divide(e_inv, e, out=np.zeros_like(e), where=e > 0), 0.0, 1.0)


def _pad(values: np.ndarray, evi: np.ndarray, pos: np.ndarray, n: int, length: int, fill, dtype) -> np.ndarray:
    keep = pos < length
    out = np.full((n, length) + values.shape[1:], fill, dtype)
    out[evi[keep], pos[keep]] = values[keep]
    return out


def event_features(events: SmcEvents, *, max_particles: int = 96, max_tokens: int = 192,
                   vocab: np.ndarray | None = None, tag_features: bool = False) -> dict[str, np.ndarray]:
    """Padded network inputs of every event (generator-level information only).

    Particles beyond ``max_particles`` (in file order) and tokens beyond ``max_tokens`` are cut;
    ``mother`` of a particle whose mother was cut is -1.

    Returns a dict of arrays with B = ``events.n_events``, L = ``max_particles``, T = ``max_tokens``:
        ``pdg`` (B, L) int64: embedding index of the particle's PDG code (0 = padding);
        ``mother_pdg`` (B, L) int64: embedding index of the mother's PDG code (:data:`NO_MOTHER` for primaries);
        ``mother`` (B, L) int64: index of the mother within the event (-1 primary or padding);
        ``x`` (B, L, F) float32: the particle features of :data:`FEATURE_NAMES` (then
            :data:`TAG_FEATURE_NAMES` if ``tag_features``; F = :func:`n_particle_features`);
        ``mask`` (B, L) bool: real particle;
        ``tokens`` (B, T) int64: decay string (PDG indices, :data:`OPEN_TOKEN`, :data:`CLOSE_TOKEN`, 0 padding);
        ``n_particles`` (B,) int64: particles before the cut.
    """
    from .simulate import CLOSE, OPEN, decay_tokens

    if max_particles < 1 or max_tokens < 1:
        raise ConfigError(f"max_particles={max_particles}, max_tokens={max_tokens}: both must be >= 1")
    vocab = default_vocabulary() if vocab is None else np.asarray(vocab, np.int64)
    n = events.n_events
    off = events.offsets
    counts = np.diff(off)
    evi = np.repeat(np.arange(n), counts)
    pos = np.arange(int(off[-1])) - off[evi]
    P = events.particles
    pdg = P["pdg"].astype(np.int64)
    mother = P["mother"].astype(np.int64)
    gm = np.where(mother >= 0, off[evi] + np.maximum(mother, 0), -1)
    pdg_idx = pdg_to_index(pdg, vocab)
    mpdg_idx = np.where(gm >= 0, pdg_idx[np.maximum(gm, 0)], NO_MOTHER)
    n_dau, depth = tree_structure(events)
    vis, n_vis, inv_frac = visibility(events)

    px, py, pz, e = (P[k].astype(np.float64) for k in ("px", "py", "pz", "energy"))
    pt = np.hypot(px, py)
    p = np.sqrt(pt**2 + pz**2)
    cos_t = np.divide(pz, p, out=np.zeros_like(p), where=p > 0)
    x = np.stack([
        px, py, pz, e, pt, cos_t, np.log1p(p),
        np.arcsinh(P["vx"] / VERTEX_SCALE_CM), np.arcsinh(P["vy"] / VERTEX_SCALE_CM), np.arcsinh(P["vz"] / VERTEX_SCALE_CM),
        np.arcsinh(P["time"] / TIME_SCALE_NS), n_dau / 4.0, depth / 4.0, (n_dau == 0).astype(np.float64),
        vis, n_vis / 10.0, inv_frac,
    ], axis=1).astype(np.float32)  # (n_particles, F)
    if tag_features:
        from .tagtruth import tag_reconstructibility

        tp, te = tag_reconstructibility(events)
        x = np.concatenate([x, np.stack([
            tp["reco_match"], tp["reco_ok"], tp["reco_eff"], tp["tag_prior"],
            te["tag_b0"][evi], te["tag_bplus"][evi], te["n_reco_charm"][evi] / 4.0,
        ], axis=1).astype(np.float32)], axis=1)
    mother_cut = np.where(mother < max_particles, mother, -1)

    L = int(max_particles)
    out = {
        "pdg": _pad(pdg_idx, evi, pos, n, L, PAD, np.int64),
        "mother_pdg": _pad(mpdg_idx, evi, pos, n, L, PAD, np.int64),
        "mother": _pad(mother_cut, evi, pos, n, L, -1, np.int64),
        "x": _pad(x, evi, pos, n, L, 0.0, np.float32),
        "mask": _pad(np.ones(len(pos), bool), evi, pos, n, L, False, bool),
        "n_particles": counts.astype(np.int64),
    }
    t_off, tok = decay_tokens(events)
    tok_idx = np.where(tok == OPEN, OPEN_TOKEN, np.where(tok == CLOSE, CLOSE_TOKEN, pdg_to_index(tok, vocab)))
    t_evi = np.repeat(np.arange(n), np.diff(t_off))
    t_pos = np.arange(len(tok)) - t_off[t_evi]
    out["tokens"] = _pad(tok_idx, t_evi, t_pos, n, int(max_tokens), PAD, np.int64)
    return out


def labels(events: SmcEvents, skims) -> np.ndarray:
    """Skim decisions ``passed_<skim>`` as float32 (B, S) training targets."""
    missing = [s for s in skims if f"passed_{s}" not in events.per_event]
    if missing:
        raise ConfigError(f"training data has no passed_{missing[0]} (has: {', '.join(sorted(events.per_event)) or 'none'})")
    return np.stack([events.per_event[f"passed_{s}"].astype(np.float32) for s in skims], axis=1)
