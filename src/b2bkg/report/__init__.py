"""Reports: shared plot style (:mod:`b2bkg.report.style`) and the self-contained HTML page
(:func:`b2bkg.report.html.build_report`, ``b2bkg report``)."""

from .html import build_report  # noqa: F401

__all__ = ["build_report"]
