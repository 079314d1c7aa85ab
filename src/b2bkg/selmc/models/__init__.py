"""Skim-prediction networks (:mod:`.nets`) and the ``smc-nn`` model family (:mod:`.family`)."""

from .family import SmcNn, SmcNnConfig, load_run, predict  # noqa: F401
from .nets import ARCHS, SmcNet  # noqa: F401
