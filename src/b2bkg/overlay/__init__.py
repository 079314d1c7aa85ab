"""Overlay background onto signal events (``b2bkg overlay``).

* :func:`overlay_pxd` (:mod:`.pxd`): digits of the same pixel add, saturating at 255 ADU.
* :func:`overlay_ecl` (:mod:`.ecl`): signal waveforms (no pedestal) + background waveforms (with
  pedestal), clamped to the 18-bit range.
* :func:`overlay_files`: stream a signal file and a background file or model run folder into an
  output file in the contract schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .ecl import overlay_ecl
from .pxd import overlay_pxd

__all__ = ["overlay_pxd", "overlay_ecl", "overlay_files", "OverlayResult"]

_CHUNK = {"pxd": 100, "ecl": 10}


@dataclass
class OverlayResult:
    """What :func:`overlay_files` did: output path, events, overlaid groups, recycled background."""

    path: Path
    n_events: int
    overlaid: tuple[str, ...]
    passed_through: tuple[str, ...]
    background_kind: str
    n_recycled: int
    notes: list[str] = field(default_factory=list)


def overlay_files(signal, background, out, *, reuse: bool = False, seed: int = 1, device: str = "cpu",
                  chunk: int | None = None, command: str = "", roi: bool = False, roi_config=None) -> OverlayResult:
    """Overlay background onto every event of ``signal`` and write ``out``.

    Args:
        signal: signal data file (groups ``pxd`` and/or ``ecl``; ``smc`` and ``conditions`` are
            copied through).
        background: a data file (event i onto signal event i) or a model run folder (background
            generated on the fly with ``seed``, at the signal file's beam conditions when it has
            them, nominal ones otherwise).
        out: output file (.h5 / .root).
        reuse: a background file with fewer events than the signal is recycled cyclically
            (otherwise an error); the number of recycled events is returned and recorded.
        seed: generation seed for a model background.
        device: torch device of a model background.
        chunk: events per streamed chunk (default 100 for PXD, 10 with ECL waveforms).
        command: command line recorded in the output.
        roi: overlay PXD background only inside the regions of interest of the signal's tracks
            (:mod:`b2bkg.overlay.roi`: from the file's ``smc`` particles, else its own PXD clusters);
            a ``pxd-fast`` run folder is sampled inside the ROIs only, any other source is
            post-filtered. ECL waveforms are overlaid in full.
        roi_config: :class:`b2bkg.overlay.roi.RoiConfig` (basf2 PXDROIFinder defaults if None).

    Returns:
        :class:`OverlayResult`.
    """
    from b2bkg.core.errors import ConfigError
    from b2bkg.core.progress import progress
    from b2bkg.io import FileWriter, open_file

    from .background import open_background

    with open_file(signal) as sf:
        n = sf.n_events
        sig_groups = [g for g in ("pxd", "ecl") if sf.has(g)]
        if not sig_groups:
            raise ConfigError(f"--signal {signal}: has neither pxd nor ecl group (has {', '.join(sf.groups) or 'none'})")
        cond_src = str(signal) if sf.has("conditions") else None
        bkg = open_background(background, n, seed=seed, reuse=reuse, conditions=cond_src, device=device)
        try:
            overlaid = tuple(g for g in sig_groups if g in bkg.groups)
            if not overlaid:
                raise ConfigError(f"--background {background}: provides {list(bkg.groups)}, signal {signal} has {sig_groups}: nothing to overlay")
            passed = tuple(g for g in sig_groups if g not in overlaid)
            notes = []
            if passed:
                notes.append(f"signal group(s) {list(passed)} copied without background (the background has none)")
            if bkg.n_recycled:
                notes.append(f"{bkg.n_recycled} background events recycled (--reuse): the background file has {bkg.n_available}")
            # conditions: those behind the background; a model background is generated at the signal's
            use_bkg_cond = bkg.kind == "file" and bkg.has_conditions()
            attrs = {
                "content": "overlay", "signal_file": str(signal), "background": str(background),
                "background_kind": bkg.kind, "overlaid_groups": ",".join(overlaid), "n_recycled": int(bkg.n_recycled),
                "reuse": bool(reuse), "conditions_from": "background" if use_bkg_cond else ("signal" if cond_src else "none"),
            }
            roi_bkg = None
            if roi:
                if "pxd" not in overlaid:
                    raise ConfigError(f"--roi: no PXD digits to overlay (signal {signal} has {sig_groups}, background {list(bkg.groups)})")
                from .roi import RoiBackground, rois_for_signal_file

                rois, roi_source = rois_for_signal_file(sf, seed, roi_config)
                roi_bkg = RoiBackground(bkg, rois)
                attrs.update({"roi": True, "roi_source": roi_source, "roi_mode": roi_bkg.mode,
                              "roi_area_fraction": rois.area_fraction(), "rois_per_event": rois.n_rois / max(n, 1)})
                notes.append(f"ROIs from {roi_source}: {rois.n_rois / max(n, 1):.1f} per event, "
                             f"{100 * rois.area_fraction():.2f} % of the PXD; background {roi_bkg.mode}")
            step = int(chunk or (_CHUNK["ecl"] if "ecl" in sig_groups else _CHUNK["pxd"]))
            if step < 1:
                raise ConfigError(f"chunk: {chunk} must be >= 1")
            with FileWriter(out, seed=seed, command=command, attrs=attrs) as w:
                for a in progress(range(0, n, step), desc="overlay", unit="chunk"):
                    b = min(n, a + step)
                    parts = {}
                    for g in sig_groups:
                        s = sf.read(g, a, b)
                        if g in overlaid:
                            fn = overlay_pxd if g == "pxd" else overlay_ecl
                            s = fn(s, roi_bkg.read(a, b) if (g == "pxd" and roi_bkg is not None) else bkg.read(g, a, b))
                        parts[g] = s
                    if sf.has("smc"):
                        parts["smc"] = sf.read("smc", a, b)
                    if use_bkg_cond:
                        parts["conditions"] = bkg.read("conditions", a, b)
                    elif cond_src:
                        parts["conditions"] = sf.read("conditions", a, b)
                    w.append(**parts)
            if roi_bkg is not None and roi_bkg.counts:
                c = roi_bkg.counts
                notes.append(f"ROI sampling built {c['clusters_built']} of {c['clusters']} drawn clusters "
                             f"({100 * c['clusters_built'] / max(c['clusters'], 1):.1f} %)")
        finally:
            bkg.close()
    return OverlayResult(Path(out), n, overlaid, passed, bkg.kind, int(bkg.n_recycled), notes)
