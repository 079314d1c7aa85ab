"""File I/O in the contract schemas (HDF5 via h5py, ROOT via uproot), chosen by file suffix.

See shared/DESIGN.md for the schemas. Main entry points: :class:`FileWriter`, :func:`open_file`,
:func:`read_pxd`, :func:`read_ecl`, :func:`read_smc`, :func:`read_conditions`, :func:`convert`, :func:`merge`,
:func:`info`.
"""

from .atomic import atomic_path  # noqa: F401
from .events import Conditions, EclWaveforms, PxdDigits, SmcEvents  # noqa: F401
from .files import DataFile, FileWriter, convert, merge, open_file, read_conditions, read_ecl, read_pxd, read_smc, write_file  # noqa: F401
from .info import info  # noqa: F401
