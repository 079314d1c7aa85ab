"""ECL waveform models (ecl-gan, ecl-ae, ecl-cov): train, save/load, generate, keep-from, fidelity
of the covariance fit, and that models follow the detector of their data file."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from b2bkg.ecl.detector import EclDetectorConfig
from b2bkg.ecl.geometry import RING_SIZES, RING_START
from b2bkg.ecl.select import select_waveforms
from b2bkg.ecl.simulate import EclSimConfig, simulate_ecl
from b2bkg.generate import generate, load_run
from b2bkg.io import read_ecl
from b2bkg.training import train
from b2bkg.training.checkpoint import module_tensors

FAMILIES = ["ecl-gan", "ecl-ae", "ecl-cov"]
TINY = {
    "ecl-gan": ["max_steps=3", "max_train_events=3", "val_events=3", "val_crystals=8", "log_every=1", "val_every=2", "d_channels=8",
                "fit_mc_per_ring=500"],
    "ecl-ae": ["max_steps=3", "max_train_events=3", "val_events=3", "val_crystals=8", "log_every=1", "val_every=2", "batch_size=64"],
    "ecl-cov": ["max_train_events=3", "val_events=3", "val_crystals=8"],
}
ALTERED = EclSimConfig(detector=EclDetectorConfig(payload_seed=7, noise_rms_min_adu=13.0, noise_rms_max_adu=19.0))




@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ecl_models")
    simulate_ecl(3, seed=1, out=d / "train.h5")
    simulate_ecl(3, seed=2, out=d / "alt.h5", config=ALTERED)
    return d


@pytest.fixture(scope="module")
def runs(files):
    torch.set_num_threads(1)
    return {f: train(f, files / "train.h5", files / f"run-{f}", val=files / "train.h5", seed=0, overrides=TINY[f]) for f in FAMILIES}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("family", FAMILIES)
def test_train_finite_and_validated(runs, family):
    run = runs[family]
    log = _rows(run / "log.csv")
    assert log, "no log rows"
    for row in log:
        for k, v in row.items():
            if k not in ("step", "time_s", "lr_factor"):
                assert math.isfinite(float(v)), (k, v)
    val = _rows(run / "val.csv")
    assert val and all(0.0 <= float(r["ks2"]) <= 1.0 for r in val)
    assert (run / "weights.safetensors").is_file() and (run / "best.safetensors").is_file()


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_shape_seed_and_roundtrip(runs, family, tmp_path):
    run = runs[family]
    a = read_ecl(generate(run, 2, seed=5, out=tmp_path / "a.h5")).waveforms
    assert a.shape == (2, 8736, 31) and a.dtype == np.int32
    # pedestal learned from the data (~3000 ADC), not a constant
    med = np.median(a, axis=2)
    assert 2700 < med.mean() < 3300 and med.std() > 10
    b = read_ecl(generate(run, 2, seed=5, out=tmp_path / "b.h5")).waveforms
    np.testing.assert_array_equal(a, b)
    c = read_ecl(generate(run, 2, seed=6, out=tmp_path / "c.h5")).waveforms
    assert (a != c).mean() > 0.5
    # the run folder holds everything: loading rebuilds identical tensors (buffers included)
    loaded = load_run(run, weights="final")
    from safetensors.torch import load_file

    stored = load_file(str(run / "weights.safetensors"))
    now = module_tensors(loaded.modules)
    assert stored.keys() == now.keys()
    for k in stored:
        torch.testing.assert_close(now[k], stored[k], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_from_keeps_selected_exactly(runs, files, family, tmp_path):
    out = read_ecl(generate(runs[family], 3, seed=1, out=tmp_path / "h.h5", keep_from=files / "train.h5")).waveforms
    truth = read_ecl(files / "train.h5").waveforms
    mask = select_waveforms(truth)
    assert mask.sum() > 0, "the tiny sample should contain selected waveforms"
    np.testing.assert_array_equal(out[mask], truth[mask])
    assert (out[~mask] != truth[~mask]).any(axis=1).mean() > 0.9  # the rest is generated


def test_gan_generator_fitted_from_data(runs, files):
    from b2bkg.ecl.models.data import fit_normalization, load_ecl_data

    g = load_run(runs["ecl-gan"]).modules["generator"]
    d = load_ecl_data(files / "train.h5", 3)
    st = fit_normalization(d.waveforms, d.selected)
    np.testing.assert_allclose(g.pedestal.numpy(), st["pedestal"], rtol=1e-6)
    ring_mean_scale = np.bincount(g.ring.numpy(), weights=g.scale.numpy()) / RING_SIZES
    np.testing.assert_allclose(ring_mean_scale, 1.0, atol=1e-5)
    # the fitted noise level per ring follows the data (robust sd, ADC) within 15 %
    sd_ring = np.bincount(g.ring.numpy(), weights=st["noise_sd"]) / RING_SIZES
    L = torch.tril(g.chol.detach())
    model_sd = (L @ L.transpose(1, 2)).diagonal(dim1=1, dim2=2).mean(1).sqrt().numpy()
    model_sd = model_sd * np.sqrt(1 + (g.coh.detach() ** 2).sum(1).numpy())
    assert np.all(np.abs(model_sd / sd_ring - 1) < 0.15), (model_sd / sd_ring).round(2)


def test_refine_scale_recovers_crystal_noise_factors():
    """Synthetic Gaussian noise with known per-crystal factors (6 % spread): the likelihood
    estimator recovers them far better than the robust MAD of the samples."""
    from scipy.linalg import toeplitz

    from b2bkg.ecl.geometry import N_CRYSTALS, N_RINGS
    from b2bkg.ecl.models.data import _ring_of_crystal, fit_normalization
    from b2bkg.ecl.models.wavegen import refine_scale

    rng = np.random.default_rng(3)
    n = 40
    ring = _ring_of_crystal()
    true = np.exp(0.06 * rng.standard_normal(N_CRYSTALS))
    true /= (np.bincount(ring, weights=true) / RING_SIZES)[ring]
    chol = np.linalg.cholesky(toeplitz(100.0 * 0.7 ** np.arange(31)))
    w = (3000 + true[None, :, None] * (rng.standard_normal((n, N_CRYSTALS, 31)).astype(np.float32) @ chol.T.astype(np.float32)))
    w = np.rint(w).astype(np.int32)
    sel = np.zeros((n, N_CRYSTALS), bool)
    st = fit_normalization(w, sel)
    sig = np.bincount(ring, weights=st["noise_sd"]) / RING_SIZES
    mad = st["noise_sd"] / sig[ring]
    est = refine_scale(w, sel, st["pedestal"].astype(np.float64), st["ring_shape"].astype(np.float64), mad, sig)
    err, err_mad = np.sqrt(np.mean((est / true - 1) ** 2)), np.sqrt(np.mean((mad / true - 1) ** 2))
    assert err < 0.03 and err < 0.6 * err_mad, (err, err_mad)  # expected ~ 1 / sqrt(62 n) = 0.020
    assert len(np.unique(ring)) == N_RINGS


def test_gan_draws_agree():
    """Training/validation draw (dense, per crystal), the exported dense graph and event sampling
    (sparse) agree: the same latents give the same waveforms, and the pile-up mean equals the
    analytic one; the draw carries path-wise gradients to the rate, the spectrum and the kernel."""
    from b2bkg.ecl.geometry import RING_START as RS
    from b2bkg.ecl.models.wavegen import WaveGenerator

    torch.manual_seed(0)
    g = WaveGenerator(coherent_modes=2, rate_factors=1)
    with torch.no_grad():
        g.log_rate.fill_(np.log(0.02))
        g.rate_load.fill_(0.1)
        g.coh.fill_(0.2)
        g.log_alpha.fill_(np.log(2.5))
        g.log_ratio.fill_(np.log(10.0))
        gen = torch.Generator().manual_seed(3)
        e = torch.randn(1, 1, g.e_dim, generator=gen)  # the sampler's order: e, then z
        dense = g(torch.randn(1, 8736, g.z_dim, generator=gen), e)[0]
        sparse = g.sample_event(torch.Generator().manual_seed(3))
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-3)
    with torch.no_grad():
        g.chol.zero_()  # pile-up only
    r = 2
    crystals = torch.arange(RS[r], RS[r] + 48)
    with torch.no_grad():
        w = g.draw(crystals[None].expand(400, -1), gen=gen)
        base, mean_pu = g.pedestal[crystals[0]] + g.base[r], float(g.mean_pileup()[r])
    assert abs(float((w - base).mean() + mean_pu) / mean_pu - 1) < 0.1
    g.zero_grad()
    g.draw(crystals[None].expand(50, -1)).pow(2).mean().backward()
    for p in (g.log_rate, g.log_alpha, g.log_ratio, g.kernel, g.rate_load):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0


def test_cov_reproduces_training_mean_and_covariance(runs, files):
    from b2bkg.ecl.models.cov import EclCov, ring_moments
    from b2bkg.ecl.models.data import load_ecl_data

    run = load_run(runs["ecl-cov"])
    s = run.modules["sampler"]
    d = load_ecl_data(files / "train.h5", 3)
    ped, sd = s.pedestal.double().numpy(), s.noise_sd.double().numpy()
    # the fit equals the empirical moments of the training residuals of a ring (direct numpy)
    r = 30
    a, b = RING_START[r], RING_START[r] + RING_SIZES[r]
    x = (d.waveforms[:, a:b].astype(np.float64) - ped[None, a:b, None]) / sd[None, a:b, None]
    x = x[~d.selected[:, a:b]]  # (n, 31)
    model_cov = (s.chol[r] @ s.chol[r].T).double().numpy()
    np.testing.assert_allclose(s.mean[r].double().numpy(), x.mean(0), atol=1e-4)
    np.testing.assert_allclose(model_cov, np.cov(x.T), rtol=1e-3, atol=1e-3 * np.cov(x.T).diagonal().mean())
    # and the sampler draws waveforms with those moments
    with torch.no_grad():
        gen = EclCov().sample_events(run.modules, run.cfg, np.arange(20), 3, "cpu").double().numpy()
    mean_g, cov_g = ring_moments(gen, None, ped, sd)
    barrel = slice(13, 59)
    true_cov = (s.chol @ s.chol.transpose(1, 2)).double().numpy()
    rel = np.linalg.norm(cov_g[barrel] - true_cov[barrel], axis=(1, 2)) / np.linalg.norm(true_cov[barrel], axis=(1, 2))
    assert rel.max() < 0.15, rel.max()  # 20 events x 144 crystals = 2880 waveforms per ring
    diff = (cov_g[barrel] - true_cov[barrel]).mean(axis=0)  # sampling errors average over 46 rings
    assert np.linalg.norm(diff) / np.linalg.norm(true_cov[barrel].mean(axis=0)) < 0.03
    assert np.abs(mean_g[barrel] - s.mean[barrel].numpy()).max() < 0.15  # in noise units


def test_cov_follows_an_altered_detector(runs, files, tmp_path):
    """Retrained on data of another detector payload (pedestals, noise level), the model follows."""
    alt = train("ecl-cov", files / "alt.h5", tmp_path / "alt", seed=0, overrides=TINY["ecl-cov"])
    nom_s, alt_s = load_run(runs["ecl-cov"]).modules["sampler"], load_run(alt).modules["sampler"]
    w = read_ecl(files / "alt.h5").waveforms.astype(np.float64)
    data_ped = w.mean(axis=(0, 2))
    assert np.corrcoef(alt_s.pedestal.numpy(), data_ped)[0, 1] > 0.99
    assert np.abs(alt_s.pedestal.numpy() - nom_s.pedestal.numpy()).mean() > 20.0  # another pedestal map
    ratio = float(alt_s.noise_sd.mean() / nom_s.noise_sd.mean())
    assert 1.3 < ratio < 1.8, ratio  # noise 13-19 vs 8-12 ADC
    g = read_ecl(generate(alt, 2, seed=1, out=tmp_path / "g.h5")).waveforms.astype(np.float64)
    assert np.abs(g.mean(axis=(0, 2)) - data_ped).mean() < 8.0


def test_models_do_not_import_simulator_or_detector():
    code = ("import sys; import b2bkg.ecl.models.gan, b2bkg.ecl.models.ae, b2bkg.ecl.models.cov; "
            "bad = [m for m in ('b2bkg.ecl.simulate', 'b2bkg.ecl.detector') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
