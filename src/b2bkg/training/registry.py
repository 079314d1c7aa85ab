"""Model families: what a model contributes to the shared trainer and to ``b2bkg generate``.

A *family* is registered under a MODEL name (``pxd-wgan``, ``ecl-cov``, ``smc-nn``, ``toy-gan``...)
and provides only what is specific to it; the :class:`~b2bkg.training.trainer.Trainer` owns the
optimizer loop, LR schedule, EMA, gradient clipping, DDP, logging, validation cadence, best-checkpoint
selection, checkpoints and resume; :func:`b2bkg.generate.generate` owns batching, per-event random
streams, conditions, output files and the progress bar.

What a family provides (subclass :class:`Family`, decorate with :func:`register`):

==================  ==============================================================================
``config_cls``      frozen dataclass deriving from :class:`TrainConfig` (so ``--set max_steps=50``
                    works for every model); presets ``src/b2bkg/configs/<name>/{small,paper}.yaml``.
``build(cfg)``      ``-> dict[str, nn.Module]``, e.g. ``{"generator": G, "critic": D}``: networks with
                    ``forward`` only (no optimizer, no I/O). Same cfg -> same shapes.
``optimizers``      ``(cfg, modules) -> dict[str, Optimizer]`` (keys are yours: ``"generator"``,
                    ``"critic"``). Return ``{}`` for a fit-only family. The trainer applies the LR
                    schedule of ``cfg`` to every param group (scaled from the lr you set).
``make_data``       ``(cfg, path, seed, rank, world_size) -> Batches``: training batches; use
                    :class:`b2bkg.training.data.ArrayBatches` for arrays held in memory (it handles
                    shuffling, sharding over DDP ranks and the resumable stream position).
``step``            ``(state, batch, step_idx) -> dict[str, float]``: ONE training step (e.g. n_critic
                    critic updates + one generator update). Call ``state.update("critic", loss)``
                    for each optimizer step (zero_grad, backward, DDP gradient average, clipping,
                    ``optimizer.step``), ``state.next_batch()`` for more batches. Use torch's global
                    RNG (``torch.randn``) for training noise: the trainer seeds, saves and restores it.
``load_val``        ``(cfg, path) -> object`` held-out sample for ``validate`` (default: None).
``validate``        ``(modules, cfg, val_data, seed) -> dict[str, float]`` named metrics of a generated
                    sample vs the held-out data (keep it small: ``cfg.val_events``). Modules are in
                    eval mode with EMA weights swapped in. ``cfg.val_metric``/``cfg.val_mode`` pick the
                    metric for the best checkpoint.
``prepare``         optional ``(cfg, modules, data)``: data-dependent buffers (normalisations) set
                    once before training; a resumed checkpoint overrides them.
``fit``             fit-only families (covariance sampler, null model): ``(cfg, modules, data, seed)
                    -> dict[str, float]`` fills the modules' buffers once; no optimizer, same run
                    folder. A buffer whose shape depends on the data may be registered empty: loading
                    resizes buffers to the stored tensors.
``sample``          ``(modules, cfg, events, seed, device, conditions=None, keep=None) -> dict[str,
                    container]``: generate the events with global indices ``events`` (int64 array);
                    draw event ``i``'s randomness only from ``torch_generator(seed, "generate", i)``
                    (see :func:`b2bkg.training.sampling.event_normal`) so output is independent of
                    batch size and shards. Returns e.g. ``{"pxd": PxdDigits}`` (keys = file groups, the
                    kwargs of ``FileWriter.append``).
``outputs``         file groups ``sample`` writes, e.g. ``("pxd",)``.
``cannot_generate`` ``None``, or a one-line reason (e.g. the cluster GAN makes clusters, not events).
``conditioned``     True if ``sample`` uses per-event beam ``conditions`` (``generate --conditions``).
``learned_conditions`` True if a conditioned family samples conditions from its own learned
                    density when ``generate`` gets no ``--conditions`` (``sample(conditions=None)``).
``supports_keep``   True if ``sample`` takes ``keep`` (events read from ``generate --keep-from``).
``generate_batch_size`` default events per ``sample`` call.
``output_suffix``   suffix of the files a family with its own writer produces (default: contract ``.h5``).
==================  ==============================================================================

Example (the toy family in :mod:`b2bkg.training.toy` is the full, tested version)::

    @dataclass(frozen=True)
    class MyConfig(TrainConfig):
        latent_dim: int = 8
        n_critic: int = 5

    @register("my-gan")
    class MyGan(Family):
        config_cls = MyConfig
        outputs = ("pxd",)

        def build(self, cfg):
            return {"generator": Gen(cfg), "critic": Critic(cfg)}

        def optimizers(self, cfg, modules):
            return {k: torch.optim.Adam(m.parameters(), lr=cfg.lr, betas=(0.5, 0.9)) for k, m in modules.items()}

        def make_data(self, cfg, path, seed, rank=0, world_size=1):
            return ArrayBatches(load_images(path), cfg.batch_size, seed, rank, world_size)

        def step(self, state, batch, step_idx):
            G, D = state.modules["generator"], state.modules["critic"]
            for _ in range(state.cfg.n_critic):
                real = state.next_batch()
                fake = G(torch.randn(len(real), state.cfg.latent_dim, device=state.device)).detach()
                d_loss = D(fake).mean() - D(real).mean()
                state.update("critic", d_loss)
            g_loss = -D(G(torch.randn(len(batch), state.cfg.latent_dim, device=state.device))).mean()
            state.update("generator", g_loss)
            return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

        def sample(self, modules, cfg, events, seed, device, conditions=None, keep=None):
            z = event_normal(seed, events, (cfg.latent_dim,), device)
            return {"pxd": to_digits(modules["generator"](z))}

Families live in their pillar (``b2bkg.pxd.models.*``, ``b2bkg.ecl.models.*``,
``b2bkg.selmc.models.*``); :func:`get_family` imports those packages' modules on first use, so
registering needs no edit here.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError, ModelError

__all__ = ["TrainConfig", "Family", "register", "get_family", "known_families", "unregister", "FAMILY_PACKAGES", "CONFIGS_DIR"]

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"

# Packages whose modules are imported to find registered families (besides the toy).
FAMILY_PACKAGES: tuple[str, ...] = ("b2bkg.training.toy", "b2bkg.pxd.models", "b2bkg.ecl.models", "b2bkg.selmc.models")


@dataclass(frozen=True)
class TrainConfig:
    """Training knobs every family shares; a family's config derives from this class.

    Attributes:
        max_steps: trainer steps (one ``Family.step`` each; a GAN step = n_critic critic updates +
            one generator update).
        batch_size: global batch size (split evenly over DDP ranks).
        lr_schedule: ``constant``, or ``linear``: constant until ``lr_decay_start`` (fraction of
            ``max_steps``), then linear to ``lr_final_factor`` x the initial lr at ``max_steps``
            (the WGAN-GP paper decays linearly to 0 from step 0: ``lr_decay_start=0``).
        lr_warmup_steps: linear warm-up from 0 over this many steps (0: none).
        grad_clip: max global gradient L2 norm per optimizer step (0: no clipping).
        ema_decay: exponential moving average of the weights of ``ema_modules`` (0: off). EMA
            weights are used for validation, ``best.safetensors`` and ``weights.safetensors``.
        ema_modules: module names to average (e.g. ``["generator"]``).
        log_every: steps between rows of ``log.csv`` (losses averaged over ranks).
        val_every: steps between validations (0: only at the end); needs ``--val``.
        val_events: size of the generated sample each validation compares (keep CPU-small).
        val_metric: metric (key of ``Family.validate``) that selects ``best.safetensors``;
            "" = the first key returned.
        val_mode: ``min`` (lower is better, e.g. KS) or ``max``.
        checkpoint_every: steps between resumable checkpoints (always one at the end).
    """

    max_steps: int = 1000
    batch_size: int = 64
    lr_schedule: Literal["constant", "linear"] = "constant"
    lr_decay_start: float = 0.0
    lr_final_factor: float = 0.0
    lr_warmup_steps: int = 0
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    ema_modules: tuple[str, ...] = ()
    log_every: int = 10
    val_every: int = 0
    val_events: int = 2000
    val_metric: str = ""
    val_mode: Literal["min", "max"] = "min"
    checkpoint_every: int = 200

    def __post_init__(self):
        check_range("max_steps", self.max_steps, 0, None)
        check_range("batch_size", self.batch_size, 1, None)
        check_range("lr_decay_start", self.lr_decay_start, 0.0, 1.0)
        check_range("lr_final_factor", self.lr_final_factor, 0.0, 1.0)
        check_range("lr_warmup_steps", self.lr_warmup_steps, 0, None)
        check_range("grad_clip", self.grad_clip, 0.0, None)
        check_range("ema_decay", self.ema_decay, 0.0, 0.999999)
        check_range("log_every", self.log_every, 1, None)
        check_range("val_every", self.val_every, 0, None)
        check_range("val_events", self.val_events, 1, None)
        check_range("checkpoint_every", self.checkpoint_every, 1, None)


class Family:
    """Base class of a model family; override what your model needs (see the module docstring)."""

    name: str = ""
    config_cls: type = TrainConfig
    outputs: tuple[str, ...] = ()
    cannot_generate: str | None = None
    conditioned: bool = False
    supports_keep: bool = False
    learned_conditions: bool = False  # conditioned family that draws its own conditions when none are given
    generate_batch_size: int = 256
    output_suffix: str | None = None  # file suffix when the family writes its own (non-contract) files
    description: str = ""

    # -- configuration -------------------------------------------------------------------------
    @property
    def presets_dir(self) -> Path:
        """``src/b2bkg/configs/<name>/`` holding ``small.yaml`` and ``paper.yaml``."""
        return CONFIGS_DIR / self.name

    # -- networks and training -------------------------------------------------------------------
    def build(self, cfg) -> dict[str, Any]:
        """``{name: nn.Module}`` for this config (random init; the trainer seeds torch first)."""
        raise NotImplementedError(f"{self.name}: build() is not implemented")

    def optimizers(self, cfg, modules) -> dict[str, Any]:
        """``{name: torch.optim.Optimizer}``; ``{}`` for a fit-only family."""
        return {}

    def make_data(self, cfg, path: str | Path, seed: int, rank: int = 0, world_size: int = 1):
        """Training data source (``Batches``: ``next()``, ``state_dict()``, ``load_state_dict()``)."""
        raise NotImplementedError(f"{self.name}: make_data() is not implemented")

    def step(self, state, batch, step_idx: int) -> dict[str, float]:
        """One training step; returns float losses for the log."""
        raise NotImplementedError(f"{self.name}: step() is not implemented")

    @property
    def is_fit(self) -> bool:
        """True if training is a single :meth:`fit` (no optimizer loop)."""
        return type(self).fit is not Family.fit

    def prepare(self, cfg, modules, data) -> None:
        """Optional: set data-dependent buffers (normalisations fitted on the training data) once,
        after ``make_data`` and before a resumed checkpoint is loaded (which then overrides them)."""

    def fit(self, cfg, modules, data, seed: int) -> dict[str, float]:
        """Fit-only families: fill the modules' buffers from ``data``; returns summary numbers."""
        raise NotImplementedError(f"{self.name}: fit() is not implemented")

    # -- validation ------------------------------------------------------------------------------
    def load_val(self, cfg, path: str | Path):
        """Held-out data for :meth:`validate` (called once, on rank 0)."""
        return None

    def validate(self, modules, cfg, val_data, seed: int) -> dict[str, float] | None:
        """Named metrics of a generated sample vs ``val_data``; None: no validation."""
        return None

    # -- generation ------------------------------------------------------------------------------
    def sample(self, modules, cfg, events, seed: int, device, conditions=None, keep=None) -> dict[str, Any]:
        """Generate events ``events`` (int64 array of global indices) -> ``{group: container}``."""
        raise ModelError(f"model {self.name}: cannot generate events ({self.cannot_generate or 'no sampler'})")

    def open_writer(self, path: str | Path, *, seed: int, command: str, attrs: dict):
        """Output writer with ``append(**groups)`` and context-manager use (default: the
        contract-schema :class:`b2bkg.io.FileWriter`)."""
        from b2bkg.io import FileWriter

        return FileWriter(path, seed=seed, command=command, attrs=attrs)

    def __repr__(self) -> str:
        return f"<Family {self.name}>"


_REGISTRY: dict[str, type[Family]] = {}
_IMPORT_FAILURES: dict[str, str] = {}
_discovered = False


def register(name: str):
    """Class decorator registering a :class:`Family` subclass under the MODEL name ``name``."""

    def deco(cls: type[Family]) -> type[Family]:
        if not (isinstance(cls, type) and issubclass(cls, Family)):
            raise TypeError(f"register({name!r}): {cls!r} is not a Family subclass")
        if not (dataclasses.is_dataclass(cls.config_cls) and issubclass(cls.config_cls, TrainConfig)):
            raise TypeError(f"register({name!r}): config_cls must be a dataclass deriving from TrainConfig")
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"register({name!r}): name already used by {old.__module__}.{old.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (tests that register throw-away families)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    """Import every module of :data:`FAMILY_PACKAGES` once (their ``@register`` fills the registry)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for pkg_name in FAMILY_PACKAGES:
        try:
            pkg = importlib.import_module(pkg_name)
        except Exception as e:  # a broken pillar must not hide the others
            _IMPORT_FAILURES[pkg_name] = f"{type(e).__name__}: {e}"
            continue
        for info in pkgutil.iter_modules(getattr(pkg, "__path__", []) or [], prefix=pkg_name + "."):
            try:
                importlib.import_module(info.name)
            except Exception as e:
                _IMPORT_FAILURES[info.name] = f"{type(e).__name__}: {e}"


def known_families() -> list[str]:
    """Sorted MODEL names of all registered families."""
    _discover()
    return sorted(_REGISTRY)


def get_family(name: str) -> Family:
    """The family registered as ``name``; ConfigError listing the known names otherwise."""
    if name not in _REGISTRY:
        _discover()
    if name not in _REGISTRY:
        extra = ""
        if _IMPORT_FAILURES:
            mod, err = next(iter(_IMPORT_FAILURES.items()))
            extra = f"; {len(_IMPORT_FAILURES)} module(s) failed to import, e.g. {mod} ({err.splitlines()[0] if err else ''})"
        raise ConfigError(f"MODEL {name!r}: unknown model (known: {', '.join(sorted(_REGISTRY)) or 'none'}){extra}")
    return _REGISTRY[name]()
