"""Exceptions of b2bkg.

Every error a user can cause derives from :class:`B2bkgError`; its message is one line that names
the file / argument, the value and what was allowed. The CLI prints it without a traceback and
exits with code 2.
"""

from __future__ import annotations


class B2bkgError(Exception):
    """Base class of all user-facing b2bkg errors (one-line message)."""


class SchemaError(B2bkgError, ValueError):
    """A data file does not follow the b2bkg schema (wrong tag, dtype, shape, range, NaN...)."""

    def __init__(self, file: str, dataset: str | None, problem: str):
        self.file, self.dataset, self.problem = str(file), dataset, problem
        where = f"{self.file}" + (f" [{dataset}]" if dataset else "")
        super().__init__(f"{where}: {problem}")


class ConfigError(B2bkgError, ValueError):
    """A configuration (YAML, --set override, CLI option) is invalid."""


class ModelError(B2bkgError):
    """A run folder or model file cannot be used for the requested operation."""
