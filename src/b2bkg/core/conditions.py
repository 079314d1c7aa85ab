"""Per-event beam conditions: the common cause behind PXD and ECL background.

Each event carries a small vector of *scale factors relative to nominal* operation. Sources of
background respond to them differently (luminosity-driven two-photon and radiative Bhabha; the
current- and vacuum-driven single-beam sources Touschek, beam-gas and synchrotron radiation), which
is what correlates occupancies within an event and lets models be conditioned on the background
level. The same model feeds the PXD and the ECL simulators, so both can be drawn for the same
events.

Columns (``CONDITION_NAMES``), all dimensionless:
    ``lumi``         instantaneous luminosity / nominal
    ``her_current``  HER (e-, 7 GeV) current / nominal
    ``ler_current``  LER (e+, 4 GeV) current / nominal
    ``her_vacuum``   HER residual-gas pressure / nominal
    ``ler_vacuum``   LER residual-gas pressure / nominal
    ``injection``    1.0 if the event falls in an injection-noise window (a "noisy bunch"), else 0.0

Model: currents fluctuate log-normally around their nominal scales; the luminosity follows the
product of the currents (bunch overlap) with its own spread; the dynamic pressure rises with the
current (square-root law); injection events occur with a small probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import check_range, from_dict, load_yaml
from .errors import ConfigError

CONDITION_NAMES: tuple[str, ...] = ("lumi", "her_current", "ler_current", "her_vacuum", "ler_vacuum", "injection")

__all__ = ["CONDITION_NAMES", "ConditionsConfig", "sample_conditions", "resolve_conditions"]


@dataclass(frozen=True)
class ConditionsConfig:
    """Nominal scales and event-to-event spreads (fractional, log-normal sigma) of the beam."""

    lumi_scale: float = 1.0
    her_current_scale: float = 1.0
    ler_current_scale: float = 1.0
    her_vacuum_scale: float = 1.0
    ler_vacuum_scale: float = 1.0
    current_spread: float = 0.015
    lumi_spread: float = 0.01
    vacuum_spread: float = 0.15
    injection_probability: float = 0.002

    def __post_init__(self):
        for name in ("lumi_scale", "her_current_scale", "ler_current_scale", "her_vacuum_scale", "ler_vacuum_scale"):
            check_range(name, getattr(self, name), 0.0, 20.0)
        for name in ("current_spread", "lumi_spread", "vacuum_spread"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_range("injection_probability", self.injection_probability, 0.0, 1.0)


def sample_conditions(cfg: ConditionsConfig, rng: np.random.Generator) -> np.ndarray:
    """Draw one event's conditions.

    Returns:
        float64 array of shape (len(CONDITION_NAMES),) in the order of ``CONDITION_NAMES``.
    """
    z = rng.standard_normal(5)
    her = cfg.her_current_scale * np.exp(cfg.current_spread * z[0] - 0.5 * cfg.current_spread**2)
    ler = cfg.ler_current_scale * np.exp(cfg.current_spread * z[1] - 0.5 * cfg.current_spread**2)
    lumi = cfg.lumi_scale * (her / cfg.her_current_scale) * (ler / cfg.ler_current_scale) * np.exp(
        cfg.lumi_spread * z[2] - 0.5 * cfg.lumi_spread**2
    )
    her_vac = cfg.her_vacuum_scale * np.sqrt(her / cfg.her_current_scale) * np.exp(cfg.vacuum_spread * z[3] - 0.5 * cfg.vacuum_spread**2)
    ler_vac = cfg.ler_vacuum_scale * np.sqrt(ler / cfg.ler_current_scale) * np.exp(cfg.vacuum_spread * z[4] - 0.5 * cfg.vacuum_spread**2)
    inj = float(rng.random() < cfg.injection_probability)
    return np.array([lumi, her, ler, her_vac, ler_vac, inj])


class ConditionsSource:
    """Where each event's conditions come from: a sampler (``ConditionsConfig``) or the
    ``conditions`` group of an existing file, reused event by event."""

    def __init__(self, cfg: ConditionsConfig | None = None, table: np.ndarray | None = None, names=None, origin: str = ""):
        self.cfg, self.table, self.origin = cfg, table, origin
        if table is not None:
            names = tuple(names)
            missing = [n for n in CONDITION_NAMES if n not in names]
            if missing:
                raise ConfigError(f"{origin}: conditions lack column(s) {missing} (have {list(names)})")
            idx = [names.index(n) for n in CONDITION_NAMES]
            self.table = np.asarray(table, dtype=np.float64)[:, idx]

    def __len__(self) -> int:
        return len(self.table) if self.table is not None else 0

    def get(self, event: int, rng: np.random.Generator) -> np.ndarray:
        """Conditions of event ``event``; from a file they are taken in order (cyclic)."""
        if self.table is not None:
            if len(self.table) == 0:
                raise ConfigError(f"{self.origin}: conditions table is empty")
            return self.table[event % len(self.table)].copy()
        return sample_conditions(self.cfg, rng)


def resolve_conditions(source: str | Path | ConditionsConfig | None) -> ConditionsSource:
    """Turn ``--conditions`` into a :class:`ConditionsSource`.

    ``None`` -> nominal config; ``*.yaml``/``*.yml`` -> a ConditionsConfig; ``*.h5``/``*.root`` -> the
    file's ``conditions`` group, reused event by event.
    """
    if source is None:
        return ConditionsSource(ConditionsConfig())
    if isinstance(source, ConditionsConfig):
        return ConditionsSource(source)
    p = Path(source)
    if p.suffix.lower() in (".yaml", ".yml"):
        return ConditionsSource(from_dict(ConditionsConfig, load_yaml(p)))
    from b2bkg.io import read_conditions

    values, names = read_conditions(p)
    return ConditionsSource(table=values, names=names, origin=str(p))
