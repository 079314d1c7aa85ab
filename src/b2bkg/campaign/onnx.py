"""ONNX export of a family's sampling network (``b2bkg export``) and onnxruntime inference.

basf2 runs networks in production through ONNX Runtime. :func:`export_onnx` writes the network
that turns random inputs into a model's output (a GAN generator, a skim classifier) as one
``.onnx`` file with a dynamic batch axis; :class:`OnnxSampler` runs it with onnxruntime on a set
number of threads and, for latent inputs, draws them per event exactly as the PyTorch sampler
does, so the two agree within float tolerance.

What is exported is chosen, in this order, by :data:`b2bkg.campaign.export_hooks.EXPORT_HOOKS`
(the wrappers of every project family: ECL, PXD GANs, the diffusion denoiser step, the skim
network; they return an :class:`ExportSpec`, which also carries multi-draw latent order, extra
dynamic axes, metadata and a fixed batch size), by an optional **family hook**::

    def export_module(self, modules, cfg):
        # -> (module, example_inputs, input_names, output_names[, latents])
        return Wrapper(modules["generator"]), (torch.zeros(1, 40, cfg.latent_dim),), ["z"], ["images"], \\
            {"z": (40, cfg.latent_dim)}

- ``module``: an ``nn.Module`` in eval mode whose ``forward(*example_inputs)`` returns a tensor or
  a tuple of tensors (one per output name); wrap post-processing that should run inside the ONNX
  graph (reshapes, tanh -> ADU scaling) in it, keep sparse assembly (digits) outside.
- ``example_inputs``: a tuple of tensors with batch size 1 on dim 0 (dim 0 is exported dynamic).
- ``input_names`` / ``output_names``: graph names (``OnnxSampler`` inputs/outputs).
- ``latents`` (optional 5th item): ``{input_name: per-event shape}`` of inputs that are standard
  normal latents drawn as ``event_normal(seed, events, shape)`` (domain ``"generate"``), i.e. the
  draws of :func:`b2bkg.training.sampling.event_normal` that the family's ``sample`` uses; recorded
  in the file so that :meth:`OnnxSampler.sample` draws the same numbers.

Families without the hook get :func:`default_export_module`: a module named ``generator`` whose
``forward`` takes one latent of shape ``(B, cfg.latent_dim)`` (the toy family, a per-sensor GAN).
Anything else (several inputs, conditioning, fit-only samplers) needs the hook.

Example:
    >>> from b2bkg.campaign.onnx import export_onnx, OnnxSampler                  # doctest: +SKIP
    >>> export_onnx("runs/toy", "toy.onnx")                                        # doctest: +SKIP
    >>> OnnxSampler("toy.onnx").sample(np.arange(10), seed=3)["x"].shape           # doctest: +SKIP
    (10, 1)
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from b2bkg.core.errors import ConfigError, ModelError

__all__ = ["ExportSpec", "export_spec", "default_export_module", "export_onnx", "OnnxSampler", "EXPORTERS"]

EXPORTERS = ("auto", "legacy", "dynamo")
META_KEY = "b2bkg"


@dataclass
class ExportSpec:
    """What to export: see the module docstring (``latents``: ``{input_name: per-event shape}``)."""

    module: object
    example_inputs: tuple
    input_names: list[str]
    output_names: list[str]
    latents: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: per-event draws in stream order: ``[(input_name | None, shape), ...]`` all from ONE
    #: ``torch_generator(seed, "generate", i)`` (None: drawn and discarded); empty: one
    #: ``event_normal`` stream per latent (the default hook's rule)
    draws: list = field(default_factory=list)
    #: ``{name: {axis: label}}`` dynamic axes; default: axis 0 (``batch``) of every input and output
    dynamic_axes: dict = field(default_factory=dict)
    #: extra JSON-able metadata recorded in the file (post-processing, feature settings)
    meta: dict = field(default_factory=dict)
    #: > 0: the graph is exported for this batch size only (models whose forward bakes the batch
    #: size in, e.g. ``len(z)`` in a reshape); :meth:`OnnxSampler.run` then feeds it in chunks
    fixed_batch: int = 0


def default_export_module(modules: dict, cfg):
    """Default hook: ``modules["generator"]`` taking one latent ``(B, cfg.latent_dim)`` -> ``x``.

    Raises ModelError when the family does not have that shape (it then needs ``export_module``).
    """
    import torch

    g = modules.get("generator")
    latent = getattr(cfg, "latent_dim", None)
    if g is None or not isinstance(latent, int):
        raise ModelError(f"modules {sorted(modules)}: no 'generator' with a cfg.latent_dim; "
                         "the family needs an export_module(modules, cfg) hook (see b2bkg.campaign.onnx)")
    params = [p for p in inspect.signature(g.forward).parameters.values()
              if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) != 1:
        raise ModelError(f"generator.forward takes {len(params)} required inputs, the default export handles one latent; "
                         "the family needs an export_module(modules, cfg) hook (see b2bkg.campaign.onnx)")
    return g, (torch.zeros(1, latent),), ["z"], ["x"], {"z": (latent,)}


def export_spec(family, modules: dict, cfg) -> ExportSpec:
    """What to export for ``family``, checked: the hook of
    :data:`b2bkg.campaign.export_hooks.EXPORT_HOOKS` for its name, else the family's
    ``export_module`` hook, else :func:`default_export_module`. A hook returns an
    :class:`ExportSpec` or the tuple of the module docstring."""
    import torch

    from b2bkg.campaign.export_hooks import EXPORT_HOOKS

    hook = EXPORT_HOOKS.get(getattr(family, "name", None)) or getattr(family, "export_module", None)
    got = hook(modules, cfg) if callable(hook) else default_export_module(modules, cfg)
    if isinstance(got, ExportSpec):
        extra = got
        got = (got.module, got.example_inputs, got.input_names, got.output_names, got.latents)
    else:
        extra = ExportSpec(None, (), [], [])
    if not isinstance(got, tuple) or len(got) not in (4, 5):
        raise ModelError(f"model {family.name}: export_module must return (module, example_inputs, input_names, "
                         f"output_names[, latents]), got {type(got).__name__}")
    module, ex, ins, outs = got[:4]
    latents = {k: tuple(int(d) for d in v) for k, v in (got[4] if len(got) == 5 else {}).items()}
    ex = tuple(ex) if isinstance(ex, (tuple, list)) else (ex,)
    if not isinstance(module, torch.nn.Module) or not all(isinstance(t, torch.Tensor) for t in ex):
        raise ModelError(f"model {family.name}: export_module must give an nn.Module and a tuple of tensors")
    if len(ins) != len(ex) or not outs:
        raise ModelError(f"model {family.name}: {len(ins)} input names for {len(ex)} example inputs, {len(outs)} outputs")
    unknown = set(latents) - set(ins)
    if unknown:
        raise ModelError(f"model {family.name}: latents {sorted(unknown)} are not inputs ({ins})")
    bad = [n for n, _ in extra.draws if n is not None and n not in latents]
    if bad:
        raise ModelError(f"model {family.name}: draws {bad} are not latents ({sorted(latents)})")
    return ExportSpec(module.eval(), ex, list(ins), list(outs), latents,
                      [(n, tuple(int(d) for d in s)) for n, s in extra.draws], dict(extra.dynamic_axes), dict(extra.meta),
                      int(extra.fixed_batch))


@contextlib.contextmanager
def _quiet_torch_onnx(notes: list[str]):
    """Silence the exporters' deprecation warnings and progress logging (they are not ours to fix);
    other warnings (e.g. the tracer's "converting a tensor to a Python boolean", which a constant
    shape check causes) are collected into ``notes`` instead of printed: the export is checked
    against PyTorch numerically afterwards."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)
            for w in caught:
                if not issubclass(w.category, (DeprecationWarning, FutureWarning)):
                    msg = f"{w.category.__name__}: {str(w.message).splitlines()[0]}"
                    if msg not in notes:
                        notes.append(msg)


def _register_legacy_symbolics(opset: int) -> None:
    """ONNX ops the legacy exporter has no mapping for although ONNX has them (``aten::sinh`` ->
    ``Sinh``, used by the ECL waveform normalisation)."""
    from torch.onnx import register_custom_op_symbolic

    register_custom_op_symbolic("aten::sinh", lambda g, x: g.op("Sinh", x), opset)


def _fix_for_onnxruntime(model) -> int:
    """Rewrite nodes onnxruntime's CPU provider does not implement: ``EyeLike`` with a bool output
    (``torch.eye(..., dtype=bool)``) becomes a float ``EyeLike`` (of a float input) + ``Cast`` to bool. Returns the
    number of nodes rewritten."""
    import onnx
    from onnx import helper

    g, fixed, nodes = model.graph, 0, []
    if not any(n.op_type == "EyeLike" for n in g.node):
        return 0
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in g.input})
    for node in g.node:
        dt = next((a for a in node.attribute if a.name == "dtype"), None)
        out_type = (dt.i if dt is not None else types.get(node.input[0])) if node.op_type == "EyeLike" else None
        if out_type == onnx.TensorProto.BOOL:
            if dt is None:
                node.attribute.append(helper.make_attribute("dtype", onnx.TensorProto.FLOAT))
            else:
                dt.i = onnx.TensorProto.FLOAT
            mid = node.output[0] + "_f"
            out = node.output[0]
            node.output[0] = mid
            if types.get(node.input[0]) == onnx.TensorProto.BOOL:  # no bool input kernel either
                src = node.input[0]
                node.input[0] = src + "_f"
                nodes.append(helper.make_node("Cast", [src], [src + "_f"], to=onnx.TensorProto.FLOAT, name=node.name + "_in"))
            nodes += [node, helper.make_node("Cast", [mid], [out], to=onnx.TensorProto.BOOL, name=node.name + "_cast")]
            fixed += 1
        else:
            nodes.append(node)
    if fixed:
        del g.node[:]
        g.node.extend(nodes)
    return fixed


def _export(spec: ExportSpec, path: Path, exporter: str, opset: int, notes: list[str] | None = None) -> str:
    """Run one torch exporter into ``path``; returns the exporter used (warnings go to ``notes``)."""
    import torch

    names = spec.input_names + spec.output_names
    fixed = spec.fixed_batch > 0
    example = (tuple(t.expand(spec.fixed_batch, *t.shape[1:]).contiguous() for t in spec.example_inputs)
               if fixed else spec.example_inputs)
    with _quiet_torch_onnx([] if notes is None else notes), torch.no_grad():
        if exporter == "legacy":
            _register_legacy_symbolics(opset)
            torch.onnx.export(spec.module, example, str(path), input_names=spec.input_names,
                              output_names=spec.output_names, opset_version=opset, dynamo=False,
                              dynamic_axes=None if fixed else (spec.dynamic_axes or {n: {0: "batch"} for n in names}))
        else:
            dims = {}
            axes = spec.dynamic_axes or {n: {0: "batch"} for n in spec.input_names}
            shapes = tuple({a: dims.setdefault(lbl, torch.export.Dim(lbl)) for a, lbl in axes.get(n, {}).items()}
                           for n in spec.input_names)
            torch.onnx.export(spec.module, example, str(path), input_names=spec.input_names,
                              output_names=spec.output_names, opset_version=max(opset, 18), dynamo=True,
                              dynamic_shapes=None if fixed else shapes, verbose=False, external_data=False)
    return exporter


def export_onnx(run_dir, out, *, exporter: str = "auto", opset: int = 17, weights: str = "auto",
                check_batch: int = 3, rtol: float = 1e-4, atol: float = 1e-4) -> dict:
    """Export the sampling network of the run folder ``run_dir`` to ``out`` (``.onnx``), atomically.

    Args:
        run_dir: run folder written by ``b2bkg train``.
        out: output ``.onnx`` file.
        exporter: ``legacy`` (TorchScript-based ``torch.onnx.export(dynamo=False)``: fast, opset
            ``opset``), ``dynamo`` (``torch.export``-based, opset >= 18, needs onnxscript), or
            ``auto``: legacy, falling back to dynamo if legacy fails or is gone.
        opset: ONNX opset for the legacy exporter.
        weights: see :func:`b2bkg.generate.load_run`.
        check_batch: the exported graph is run with onnxruntime on this many random rows and
            compared with PyTorch; a difference beyond ``rtol``/``atol`` raises ModelError.

    Returns:
        ``{"path", "model", "exporter", "opset", "bytes", "inputs", "outputs", "latents", "max_abs_diff",
        "warnings"}`` (``warnings``: the exporter's non-deprecation warnings, one line each).
    """
    import onnx
    import torch

    from b2bkg import __version__
    from b2bkg.campaign.dask import sha256_file
    from b2bkg.generate import load_run
    from b2bkg.io.atomic import atomic_path

    if exporter not in EXPORTERS:
        raise ConfigError(f"--exporter {exporter!r}: must be one of {', '.join(EXPORTERS)}")
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: must end in .onnx")
    run = load_run(run_dir, "cpu", weights)
    spec = export_spec(run.family, run.modules, run.cfg)
    with tempfile.TemporaryDirectory(prefix="b2bkg-onnx-") as td:
        raw = Path(td) / "raw.onnx"
        order = ["legacy", "dynamo"] if exporter == "auto" else [exporter]
        errors, notes = [], []
        used = None
        for ex in order:
            try:
                used = _export(spec, raw, ex, opset, notes)
                break
            except Exception as e:  # try the next exporter; report all if none works
                errors.append(f"{ex}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        if used is None:
            raise ModelError(f"model {run.family.name} ({run_dir}): ONNX export failed ({'; '.join(errors)})")
        model = onnx.load(str(raw))
        _fix_for_onnxruntime(model)
    meta = {"model": run.family.name, "run_dir": str(Path(run_dir).resolve()), "weights": run.weights_file.name,
            "weights_sha256": sha256_file(run.weights_file), "version": __version__, "exporter": used,
            "inputs": spec.input_names, "outputs": spec.output_names,
            "latents": {k: list(v) for k, v in spec.latents.items()}, "latent_domain": "generate",
            "draws": [[n, list(s)] for n, s in spec.draws], "fixed_batch": spec.fixed_batch, **spec.meta,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    model.producer_name, model.producer_version = "b2bkg", __version__
    onnx.checker.check_model(model)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
        # same output as PyTorch on random rows (batch != the example's: the batch axis is dynamic)
        gen = torch.Generator().manual_seed(0)
        inputs = [torch.randn((check_batch, *t.shape[1:]), generator=gen).to(t.dtype) if t.is_floating_point()
                  else t.expand(check_batch, *t.shape[1:]).clone() for t in spec.example_inputs]
        with torch.no_grad():
            ref = spec.module(*inputs)
        ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        got = OnnxSampler(tmp, threads=1).run(**{n: t.numpy() for n, t in zip(spec.input_names, inputs)})
        diff = 0.0
        for name, r in zip(spec.output_names, ref):
            r = r.numpy()
            g = got[name]
            if g.shape != r.shape or not np.allclose(g, r, rtol=rtol, atol=atol):
                raise ModelError(f"model {run.family.name}: ONNX output {name!r} differs from PyTorch "
                                 f"(shape {g.shape} vs {r.shape}, max |diff| {np.abs(g - r).max() if g.shape == r.shape else 'n/a'})")
            diff = max(diff, float(np.abs(g - r).max()) if r.size else 0.0)
    return {"path": out, "model": run.family.name, "exporter": used, "opset": int(model.opset_import[0].version),
            "bytes": out.stat().st_size, "inputs": spec.input_names, "outputs": spec.output_names,
            "latents": meta["latents"], "max_abs_diff": diff, "warnings": notes}


class OnnxSampler:
    """Run an exported network with onnxruntime (CPU) on ``threads`` intra-op threads.

    Attributes:
        input_names, output_names: graph names.
        meta: the b2bkg metadata written by :func:`export_onnx` (model, weights checksum, latents).

    Example:
        >>> s = OnnxSampler("toy.onnx")                                          # doctest: +SKIP
        >>> s.run(z=np.zeros((5, 4), np.float32))["x"].shape                     # doctest: +SKIP
        (5, 1)
    """

    def __init__(self, path, threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("ONNX inference needs onnxruntime: pip install 'b2bkg[prod]'") from None
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: ONNX file not found")
        if threads < 1:
            raise ConfigError(f"threads: {threads} must be >= 1")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        self.path = path
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        raw = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        self.meta = json.loads(raw) if raw else {}

    def run(self, **inputs) -> dict[str, np.ndarray]:
        """Outputs ``{name: array}`` for inputs ``{name: array}`` (batch on axis 0, float32 for floats)."""
        missing = [n for n in self.input_names if n not in inputs]
        # inputs the exporter pruned because the graph does not use them (e.g. ``mother`` of a conv
        # skim network) are accepted and ignored
        extra = [n for n in inputs if n not in self.input_names and n not in self.meta.get("inputs", ())]
        if missing or extra:
            raise ConfigError(f"{self.path}: inputs {sorted(inputs)}, the network takes {self.input_names}")
        feed = {n: (np.asarray(a, np.float32) if np.asarray(a).dtype.kind == "f" else np.asarray(a))
                for n, a in inputs.items() if n in self.input_names}
        fb = int(self.meta.get("fixed_batch") or 0)
        if fb <= 0:
            return dict(zip(self.output_names, self.session.run(self.output_names, feed)))
        n = len(next(iter(feed.values())))  # fixed-batch graph: run in chunks of fb rows (last one padded)
        parts = []
        for a in range(0, n, fb):
            chunk = {k: v[a:a + fb] for k, v in feed.items()}
            short = fb - len(next(iter(chunk.values())))
            if short:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], short, 0)]) for k, v in chunk.items()}
            parts.append([o[:fb - short] for o in self.session.run(self.output_names, chunk)])
        if not parts:
            raise ConfigError(f"{self.path}: no input rows")
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(self.output_names)}

    def sample_latents(self, events, seed: int) -> dict[str, np.ndarray]:
        """The latent inputs of events ``events`` (global indices), drawn per event as the PyTorch sampler does."""
        from b2bkg.training.sampling import event_normal

        lat = self.meta.get("latents") or {}
        if not lat:
            raise ModelError(f"{self.path}: the export records no latent inputs; call run() with explicit inputs")
        ev = np.asarray(events, np.int64).reshape(-1)
        dom = self.meta.get("latent_domain", "generate")
        draws = self.meta.get("draws") or []
        if draws:  # several draws in order from one per-event stream (the family's own order)
            import torch

            from b2bkg.core.seeding import torch_generator

            out = {n: np.empty((len(ev), *lat[n]), np.float32) for n, _ in draws if n is not None}
            for k, e in enumerate(ev):
                g = torch_generator(seed, dom, int(e))
                for n, shape in draws:
                    x = torch.randn(tuple(shape), generator=g)
                    if n is not None:
                        out[n][k] = x.numpy()
            return out
        return {n: event_normal(seed, ev, tuple(shape), domain=dom).numpy() for n, shape in lat.items()}

    def sample(self, events, seed: int, **other_inputs) -> dict[str, np.ndarray]:
        """Run the network on the per-event latents of ``events`` (plus any non-latent inputs given)."""
        return self.run(**self.sample_latents(events, seed), **other_inputs)
