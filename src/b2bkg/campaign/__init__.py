"""Production: sharded generation campaigns on Dask, ONNX export and inference, storage accounting.

- :mod:`.dask`: :func:`run_campaign` (``b2bkg campaign``), :func:`merge_shards`, :func:`plan_shards`.
- :mod:`.onnx`: :func:`export_onnx` (``b2bkg export``), :class:`OnnxSampler` (onnxruntime inference).
- :mod:`.storage`: :func:`storage_table` (``b2bkg storage``): what replacing overlay files costs and saves.

Dask, onnx and onnxruntime are optional (``pip install 'b2bkg[prod]'``); they are imported only when used.
"""

from .dask import CampaignError, load_manifest, merge_shards, plan_shards, run_campaign

__all__ = ["run_campaign", "merge_shards", "load_manifest", "plan_shards", "CampaignError", "export_onnx",
           "OnnxSampler", "storage_table"]


def __getattr__(name):  # lazy: onnx/onnxruntime and the simulators load only when asked for
    if name in ("export_onnx", "OnnxSampler"):
        from . import onnx as _onnx

        return getattr(_onnx, name)
    if name == "storage_table":
        from .storage import storage_table

        return storage_table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
