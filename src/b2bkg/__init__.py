"""b2bkg: cheap Belle II background simulation.

Pillars: :mod:`b2bkg.pxd` (PXD pixel background), :mod:`b2bkg.ecl` (ECL noise waveforms),
:mod:`b2bkg.selmc` (selective MC), over a shared core (:mod:`b2bkg.io`, :mod:`b2bkg.core`,
:mod:`b2bkg.training`, :mod:`b2bkg.nn`).
"""

__version__ = "0.1.0"
