"""One self-contained HTML report from evaluation folders, run folders and benchmark results.

Inputs (each PATH given to :func:`build_report`; a folder holding none of these is searched
recursively for them, ``checkpoint/`` folders excepted):

* **evaluation folder**: ``metrics.json`` (+ ``*.png``), as written by ``b2bkg evaluate``;
* **run folder**: ``config.yaml`` with ``log.csv`` / ``val.csv`` / ``meta.json``, as written by
  ``b2bkg train`` (a folder may be both);
* **benchmark results**: a JSON file written by ``benchmarks/run.py --out`` (``meta`` + ``results``).

The page has one section per pillar (PXD background, ECL background, selective MC, then
anything else), in the order of :data:`PILLARS`. The pillar of a folder is, first found:
the ``pillar`` key of metrics.json; the ``b2bkg.<pillar>.`` prefix of its ``schema`` key; the
``<pillar>-`` prefix of the model name in config.yaml / meta.json / metrics.json; "other".

An evaluation shows its metric table (nested metrics.json flattened to dotted names; a dict with
a ``value`` is one row showing ``value ± err``, ``floor ± floor_err``, unit and description;
``x`` / ``x_err`` / ``x_floor`` siblings are merged the same way; long lists are summarized),
its seed and sample sizes, and every PNG of the folder. A run shows its config (model, seed,
version, git hash, data, command; the full YAML folded), its status from meta.json, and
matplotlib plots of the training losses (log.csv) and validation metrics (val.csv) drawn here.

Images are embedded as base64 ``data:`` URIs, the CSS is inline, there is no script and no
network reference: the file can be mailed or archived alone. It is written atomically.

Example:
    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "ev").mkdir(), (d / "ev" / "metrics.json").write_text(json.dumps({"pillar": "pxd", "seed": 1}))
    >>> build_report([d / "ev"], d / "report.html").name
    'report.html'
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from b2bkg.core.errors import ConfigError

__all__ = ["build_report", "discover", "flatten_metrics", "detect_pillar", "PILLARS", "Entry", "MetricRow"]

PILLARS: dict[str, str] = {
    "pxd": "PXD background",
    "ecl": "ECL background",
    "smc": "Selective MC",
    "validation": "Physics validation (overlay onto signal)",
    "bench": "Benchmarks",
    "other": "Other",
}
_PILLAR_ALIASES = {"selmc": "smc", "selective-mc": "smc"}
_RUN_FILES = ("log.csv", "val.csv", "meta.json")
_METRICS_FILES = ("metrics.json", "validation.json")  # evaluation folders / validate folders
_SKIP_METRIC_KEYS = {"plots", "schema", "pillar"}
_MAX_INLINE_LIST = 8
_MAX_LOG_POINTS = 5000


# ------------------------------------------------------------------------------------- discovery

@dataclass
class Entry:
    """One input of the report: an evaluation folder, a run folder (or both) or a benchmark file."""

    path: Path
    metrics: dict | None = None  # metrics.json
    config: dict | None = None  # config.yaml
    meta: dict | None = None  # meta.json
    bench: dict | None = None  # benchmarks/run.py output
    pillar: str = "other"
    problems: list[str] = field(default_factory=list)

    @property
    def is_run(self) -> bool:
        return self.config is not None or any((self.path / f).is_file() for f in _RUN_FILES)

    @property
    def is_eval(self) -> bool:
        return self.metrics is not None


def _read_json(path: Path, problems: list[str]) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{path.name}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name}: top level is {type(data).__name__}, not an object")
        return None
    return data


def _read_yaml(path: Path, problems: list[str]) -> dict | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{path.name}: unreadable ({type(e).__name__})")
        return None
    return data if isinstance(data, dict) else {"value": data}


def _is_bench(data: dict | None) -> bool:
    return isinstance(data, dict) and isinstance(data.get("results"), list) and isinstance(data.get("meta"), dict)


def _is_input_folder(p: Path) -> bool:
    return any((p / f).is_file() for f in _METRICS_FILES) or (p / "config.yaml").is_file() or any((p / f).is_file() for f in _RUN_FILES)


def _model_name(*dicts) -> str | None:
    for d in dicts:
        if isinstance(d, dict) and isinstance(d.get("model"), str):
            return d["model"]
    return None


def detect_pillar(metrics: dict | None = None, config: dict | None = None, meta: dict | None = None) -> str:
    """Pillar key of :data:`PILLARS` for a folder (see the module docstring for the order)."""
    for d in (metrics, config):
        p = d.get("pillar") if isinstance(d, dict) else None
        if isinstance(p, str):
            p = _PILLAR_ALIASES.get(p.lower(), p.lower())
            if p in PILLARS:
                return p
    schema = metrics.get("schema") if isinstance(metrics, dict) else None
    if isinstance(schema, str) and schema.startswith("b2bkg."):
        p = _PILLAR_ALIASES.get(schema.split(".")[1], schema.split(".")[1])
        if p in PILLARS:
            return p
    model = _model_name(config, meta, metrics)
    if model:
        p = model.lower().split("-")[0]
        p = _PILLAR_ALIASES.get(p, p)
        if p in PILLARS:
            return p
    return "other"


def _load_entry(path: Path) -> Entry:
    e = Entry(path)
    if path.is_file():
        data = _read_json(path, e.problems)
        if not _is_bench(data):
            raise ConfigError(f"{path}: not a benchmark result file (a JSON object with 'meta' and 'results'); "
                              "pass evaluation or run folders, or benchmarks/run.py --out files")
        e.bench, e.pillar = data, "bench"
        return e
    for name in _METRICS_FILES:
        if (path / name).is_file():
            e.metrics = _read_json(path / name, e.problems)
            if name == "validation.json" and isinstance(e.metrics, dict):
                e.metrics.setdefault("pillar", "validation")
            break
    if (path / "config.yaml").is_file():
        e.config = _read_yaml(path / "config.yaml", e.problems)
    if (path / "meta.json").is_file():
        e.meta = _read_json(path / "meta.json", e.problems)
    e.pillar = detect_pillar(e.metrics, e.config, e.meta)
    return e


def discover(paths: list[str | Path]) -> list[Entry]:
    """Entries for ``paths`` (folders are searched recursively when they are not inputs themselves)."""
    if not paths:
        raise ConfigError("report: no input PATH given (evaluation folders, run folders or benchmark JSON files)")
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ConfigError(f"report: {p}: no such file or folder")
        if p.is_file() or _is_input_folder(p):
            found.append(p)
            continue
        sub = sorted({q.parent for name in (*_METRICS_FILES, "config.yaml", *_RUN_FILES) for q in p.rglob(name)
                      if "checkpoint" not in q.relative_to(p).parts})
        if not sub:
            raise ConfigError(f"report: {p}: holds no evaluation folder (metrics.json) or run folder (config.yaml, log.csv)")
        found += sub
    seen, unique = set(), []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return [_load_entry(p) for p in unique]


# ---------------------------------------------------------------------------------------- tables

@dataclass
class MetricRow:
    name: str
    value: Any
    err: Any = None
    floor: Any = None
    floor_err: Any = None
    unit: str = ""
    description: str = ""


def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _summarize_list(v: list) -> str:
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) and v:
        if len(v) <= _MAX_INLINE_LIST:
            return "[" + ", ".join(_fmt(x) for x in v) + "]"
        finite = [float(x) for x in v if isinstance(x, (int, float)) and math.isfinite(x)]
        if not finite:
            return f"{len(v)} values, none finite"
        mean = sum(finite) / len(finite)
        return f"{len(v)} values: mean {_fmt(mean)}, min {_fmt(min(finite))}, max {_fmt(max(finite))}"
    if all(_is_scalar(x) for x in v):
        items = ", ".join(str(x) for x in v[:_MAX_INLINE_LIST])
        return f"[{items}{', ...' if len(v) > _MAX_INLINE_LIST else ''}]" + (f" ({len(v)} items)" if len(v) > _MAX_INLINE_LIST else "")
    return f"list of {len(v)} {type(v[0]).__name__ if v else ''}s"


def flatten_metrics(metrics: dict, prefix: str = "") -> list[MetricRow]:
    """Rows of a nested metrics dict, in file order (see the module docstring)."""
    rows: list[MetricRow] = []
    keys = list(metrics)
    merged = {f"{k}{s}" for k in keys for s in ("_err", "_floor", "_floor_err") if f"{k}{s}" in metrics and _is_scalar(metrics.get(k))}
    for k in keys:
        if (not prefix and k in _SKIP_METRIC_KEYS) or k in merged:
            continue
        v = metrics[k]
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and "value" in v and _is_scalar(v["value"]):
            rows.append(MetricRow(name, v["value"], v.get("err"), v.get("floor"), v.get("floor_err"),
                                  str(v.get("unit") or ""), str(v.get("description") or "")))
        elif isinstance(v, dict):
            rows.extend(flatten_metrics(v, name))
        elif isinstance(v, list):
            rows.append(MetricRow(name, _summarize_list(v)))
        else:
            rows.append(MetricRow(name, v, metrics.get(f"{k}_err"), metrics.get(f"{k}_floor"), metrics.get(f"{k}_floor_err")))
    return rows


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(v)


def _pm(v, e) -> str:
    if v is None:
        return ""
    return _fmt(v) + (f" ± {_fmt(e)}" if e is not None else "")


def _esc(v) -> str:
    return html.escape(str(v), quote=True)


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = "\n".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>\n{body}\n</tbody></table>'


def _pivot_keys(metrics: dict) -> list[str]:
    """Top-level keys that compare samples side by side: ``{sample: {stat: scalar or list}}`` with
    at least two samples (e.g. ``summary: {truth: {...}, generated: {...}}``)."""
    keys = []
    for k, v in metrics.items():
        if k in _SKIP_METRIC_KEYS or not isinstance(v, dict) or len(v) < 2:
            continue
        inner = list(v.values())
        if all(isinstance(x, dict) and "value" not in x and x and all(_is_scalar(y) or isinstance(y, list) for y in x.values())
               for x in inner):
            keys.append(k)
    return keys


def _pivot_table(name: str, block: dict, labels: dict | None) -> str:
    samples = list(block)
    stats: list[str] = []
    for s in samples:
        stats += [k for k in block[s] if k not in stats]
    head = [name] + [str((labels or {}).get(s, s)) for s in samples]
    rows = [[k] + [_summarize_list(block[s][k]) if isinstance(block[s].get(k), list) else _fmt(block[s].get(k)) for s in samples]
            for k in stats]
    return _table(head, rows, "metrics")


def _metrics_table(metrics: dict) -> str:
    pivots = _pivot_keys(metrics)
    rows = flatten_metrics({k: v for k, v in metrics.items() if k not in pivots})
    labels = metrics.get("labels") if isinstance(metrics.get("labels"), dict) else None
    extra = "".join(f"<h4>{_esc(k)}</h4>{_pivot_table(k, metrics[k], labels)}" for k in pivots)
    if not rows:
        return extra or "<p class='note'>metrics.json holds no metrics.</p>"
    has_err = any(r.err is not None for r in rows)
    has_floor = any(r.floor is not None for r in rows)
    has_unit = any(r.unit for r in rows)
    has_desc = any(r.description for r in rows)
    head = ["metric", "value" + (" ± err" if has_err else "")] + (["floor ± err"] if has_floor else []) \
        + (["unit"] if has_unit else []) + (["description"] if has_desc else [])
    body = []
    for r in rows:
        row = [r.name, _pm(r.value, r.err) if r.value is not None else "null"]
        if has_floor:
            row.append(_pm(r.floor, r.floor_err))
        if has_unit:
            row.append(r.unit)
        if has_desc:
            row.append(r.description)
        body.append(row)
    return _table(head, body, "metrics") + extra


# ----------------------------------------------------------------------------------------- plots

def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(png: bytes, caption: str) -> str:
    return (f'<figure><img alt="{_esc(caption)}" src="{_data_uri(png)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _read_csv(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    """Numeric columns of a CSV (non-numeric cells -> NaN; non-numeric columns dropped)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return [], {}
    cols: dict[str, list[float]] = {}
    for k in rows[0]:
        if k is None:
            continue
        vals, numeric = [], False
        for r in rows:
            try:
                vals.append(float(r.get(k) or "nan"))
                numeric = numeric or r.get(k) not in (None, "")
            except ValueError:
                vals.append(float("nan"))
        if numeric and not all(math.isnan(x) for x in vals):
            cols[k] = vals
    return list(cols), cols


def _plot_curves(cols: dict[str, list[float]], names: list[str], title: str, ylabel: str, separate: bool) -> bytes:
    """PNG of columns ``names`` against ``step`` (or row number): one panel, or one per column."""
    import numpy as np

    from b2bkg.report.style import new_figure

    x = np.asarray(cols.get("step") or list(range(len(next(iter(cols.values()))))), dtype=float)
    stride = max(1, len(x) // _MAX_LOG_POINTS)
    n = len(names) if separate else 1
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = new_figure(nrows, ncols, size=(5.0 * ncols, 3.6 * nrows), squeeze=False)
    flat = axes.ravel()
    for i, name in enumerate(names):
        ax = flat[i if separate else 0]
        y = np.asarray(cols[name], dtype=float)
        ok = np.isfinite(y)
        ax.plot(x[ok][::stride], y[ok][::stride], lw=1.2, label=name, color="C1" if separate else None,
                marker="o" if separate and ok.sum() <= 50 else None, ms=3)
        if separate:
            ax.set_title(name)
    for ax in flat[: n]:
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel if not separate else "")
        if not separate:
            ax.set_title(title)
            ax.legend(loc="best")
    for ax in flat[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


_LOG_NON_LOSS = {"step", "time_s", "lr_factor", "lr", "epoch", "wall_s"}


def _run_plots(folder: Path) -> list[str]:
    out = []
    log = folder / "log.csv"
    if log.is_file():
        _, cols = _read_csv(log)
        losses = [k for k in cols if k not in _LOG_NON_LOSS]
        if losses:
            out.append(_figure(_plot_curves(cols, losses, "training log", "loss", separate=False),
                               f"training losses from {log.name} ({len(cols[losses[0]])} rows)"))
    val = folder / "val.csv"
    if val.is_file():
        _, cols = _read_csv(val)
        metrics = [k for k in cols if k not in _LOG_NON_LOSS]
        if metrics:
            out.append(_figure(_plot_curves(cols, metrics, "validation", "", separate=True),
                               f"validation metrics from {val.name}"))
    return out


def _pngs(folder: Path, metrics: dict | None) -> list[Path]:
    listed = [folder / p for p in (metrics or {}).get("plots", []) if isinstance(p, str)]
    files = [p for p in listed if p.is_file() and p.suffix.lower() == ".png"]
    files += sorted(p for p in folder.glob("*.png") if p not in files)
    return files


# -------------------------------------------------------------------------------------- sections

def _kv_table(pairs: list[tuple[str, Any]]) -> str:
    rows = [[k, v if isinstance(v, str) else json.dumps(v, default=str)] for k, v in pairs if v is not None]
    return _table(["", ""], rows, "kv") if rows else ""


def _provenance(e: Entry) -> str:
    """Configs and seeds that produced a folder."""
    parts = []
    cfg = e.config or {}
    m = e.metrics or {}
    pairs = [(k, cfg.get(k)) for k in ("model", "seed", "version", "git", "data", "val", "device", "world_size", "command")]
    for k in ("seed", "n_boot", "labels", "n_events", "n_events_truth", "n_events_generated", "floor_from", "command", "version"):
        if k in m and not any(k == p for p, v in pairs if v is not None):
            pairs.append((f"{k}", m[k]))
    if e.meta:
        for k in ("status", "step", "max_steps", "wall_s", "device", "torch_threads", "parameters", "best"):
            if k in e.meta:
                pairs.append((f"meta.{k}", e.meta[k]))
    t = _kv_table(pairs)
    if t:
        parts.append(t)
    if e.config is not None:
        text = (e.path / "config.yaml").read_text() if (e.path / "config.yaml").is_file() else yaml.safe_dump(e.config)
        parts.append(f"<details><summary>config.yaml</summary><pre>{_esc(text)}</pre></details>")
    return "\n".join(parts)


def _entry_section(e: Entry, base: Path | None) -> str:
    kinds = [k for k, on in (("evaluation", e.is_eval), ("run", e.is_run)) if on]
    title = _display_path(e.path, base)
    out = [f'<section class="entry"><h3>{_esc(title)} <span class="tag">{_esc(" + ".join(kinds) or "folder")}</span></h3>']
    for p in e.problems:
        out.append(f"<p class='warn'>{_esc(p)}</p>")
    prov = _provenance(e)
    if prov:
        out.append(f"<h4>Provenance</h4>{prov}")
    if e.is_eval:
        out.append(f"<h4>Metrics</h4>{_metrics_table(e.metrics)}")
    figs = []
    if e.is_run:
        try:
            figs += _run_plots(e.path)
        except (OSError, ValueError) as err:
            out.append(f"<p class='warn'>cannot plot the training log: {_esc(err)}</p>")
    for png in _pngs(e.path, e.metrics):
        figs.append(_figure(png.read_bytes(), png.name))
    if figs:
        out.append("<h4>Plots</h4><div class='figs'>" + "\n".join(figs) + "</div>")
    out.append("</section>")
    return "\n".join(out)


def _bench_section(e: Entry, base: Path | None) -> str:
    data = e.bench or {}
    rows = []
    for r in data.get("results", []):
        if not isinstance(r, dict):
            continue
        ok = r.get("status") == "ok"
        unit = r.get("unit", "")
        ratio = "baseline" if r.get("baseline") is None else (f"{_fmt(r.get('ratio'))}x {r.get('baseline')}" if r.get("ratio") is not None else "")
        met = {True: "yes", False: "NO", None: ""}.get(r.get("target_met"), "")
        rows.append([
            r.get("name", "?"),
            f"{_fmt(r.get('median_s'))} s/{unit}" if ok else str(r.get("status", "")).upper(),
            _fmt(r.get("iqr_s")) + " s" if ok else "",
            _fmt(r.get("peak_rss_mb")) if ok else "",
            ratio if ok else "",
            r.get("target", ""),
            met if ok else r.get("message", ""),
        ])
    meta = data.get("meta", {})
    head = ["workload", "median", "IQR", "peak RSS MB", "vs baseline", "target", "met"]
    env = _kv_table([(k, meta.get(k)) for k in ("time", "cpu", "cpu_count", "threads", "torch", "numpy", "quick")])
    return (f'<section class="entry"><h3>{_esc(_display_path(e.path, base))} <span class="tag">benchmarks</span></h3>'
            f"{env}{_table(head, rows, 'metrics')}</section>")


def _display_path(p: Path, base: Path | None) -> str:
    try:
        return str(p.resolve().relative_to(base)) if base else str(p)
    except ValueError:
        return str(p)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
 padding:1.5em;color:#1f1f1f;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #d62728;padding-bottom:.2em;margin-top:1.8em}
h3{margin-bottom:.3em}h4{margin:.8em 0 .3em 0;color:#444}
.sub{color:#666;font-size:.9em}.tag{font-size:.7em;font-weight:normal;background:#eee;border-radius:4px;padding:1px 6px}
table{border-collapse:collapse;margin:.4em 0;font-size:.88em}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;
 vertical-align:top}th{background:#f4f4f4}table.metrics td:nth-child(n+2){font-variant-numeric:tabular-nums}
table.kv thead{display:none}table.kv td:first-child{font-weight:600;white-space:nowrap}
.figs{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;max-width:560px}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.8em;color:#555}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}
.warn{color:#b00}.note{color:#666}section.entry{border-top:1px solid #eee;padding-top:.4em}
nav ul{margin:.2em 0}
"""


def build_report(paths: list[str | Path], out: str | Path, title: str = "b2bkg report") -> Path:
    """Write one self-contained HTML page for ``paths`` to ``out`` (atomically) and return ``out``.

    Args:
        paths: evaluation folders, run folders, folders holding either, or benchmark JSON files.
        out: the HTML file to write (parent folders are created).
        title: page title.
    """
    from b2bkg import __version__
    from b2bkg.io.atomic import atomic_path

    out = Path(out)
    entries = discover(paths)
    try:
        base = Path.cwd().resolve()
    except OSError:
        base = None
    by_pillar: dict[str, list[Entry]] = {k: [] for k in PILLARS}
    for e in entries:
        by_pillar.setdefault(e.pillar, []).append(e)
    sections, nav = [], []
    for key, items in by_pillar.items():
        if not items:
            continue
        name = PILLARS.get(key, key)
        nav.append(f'<li><a href="#{_esc(key)}">{_esc(name)}</a> ({len(items)})</li>')
        body = [_bench_section(e, base) if e.bench is not None else _entry_section(e, base) for e in items]
        sections.append(f'<h2 id="{_esc(key)}">{_esc(name)}</h2>\n' + "\n".join(body))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_esc(title)}</h1>
<p class="sub">b2bkg {_esc(__version__)} &middot; written {_esc(stamp)} &middot; {len(entries)} input(s)</p>
<nav><ul>{''.join(nav)}</ul></nav>
{chr(10).join(sections)}
</body></html>
"""
    with atomic_path(out) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return out
