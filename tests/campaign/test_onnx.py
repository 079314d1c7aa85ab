"""ONNX export: onnxruntime gives the PyTorch sampler's output within tolerance, for any batch."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from b2bkg.campaign.onnx import OnnxSampler, export_onnx, export_spec  # noqa: E402
from b2bkg.core.errors import ConfigError, ModelError  # noqa: E402
from b2bkg.generate import load_run  # noqa: E402
from b2bkg.training import Family, TrainConfig, register  # noqa: E402
from b2bkg.training.registry import unregister  # noqa: E402




@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    return export_onnx(tiny_run, tmp_path_factory.mktemp("onnx") / "model.onnx", exporter="legacy")


def test_onnx_sampler_matches_pytorch_sampler(tiny_run, exported):
    run = load_run(tiny_run)
    s = OnnxSampler(exported["path"], threads=1)
    assert s.meta["model"] == run.family.name and s.meta["weights"] == run.weights_file.name
    assert exported["max_abs_diff"] < 1e-5 and exported["exporter"] == "legacy"
    for events in (np.arange(1), np.arange(5, 42), np.array([7, 3, 1000003])):  # dynamic batch, any indices
        got = s.sample(events, seed=4)
        with torch.no_grad():
            ref = run.family.sample(run.modules, run.cfg, events, 4, torch.device("cpu"))
        if run.family.name == "toy-gan":  # the toy's sample returns generator(z)[:, 0]
            np.testing.assert_allclose(got["x"][:, 0], ref["x"], rtol=1e-5, atol=1e-6)
        assert next(iter(got.values())).shape[0] == len(events)
    # different seeds -> different latents -> different output
    a, b = s.sample(np.arange(20), 1), s.sample(np.arange(20), 2)
    assert np.abs(a[s.output_names[0]] - b[s.output_names[0]]).max() > 1e-3


def test_run_checks_inputs(exported):
    s = OnnxSampler(exported["path"])
    with pytest.raises(ConfigError, match="inputs"):
        s.run(wrong=np.zeros((2, 4), np.float32))
    with pytest.raises(ConfigError, match="not found"):
        OnnxSampler(exported["path"].with_name("missing.onnx"))


def test_cli_export(tiny_run, tmp_path, capsys):
    from b2bkg.cli.main import main

    out = tmp_path / "cli.onnx"
    main(["--quiet", "export", "--model", str(tiny_run), "--out", str(out), "--exporter", "legacy"])
    assert "max |ONNX - PyTorch|" in capsys.readouterr().out
    import onnx

    m = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in m.metadata_props}["b2bkg"])
    assert meta["inputs"] == ["z"] and meta["latents"]["z"] == [load_run(tiny_run).cfg.latent_dim]
    with pytest.raises(SystemExit) as e:
        main(["--quiet", "export", "--model", str(tiny_run), "--out", str(tmp_path / "x.txt")])
    assert e.value.code == 2 and ".onnx" in capsys.readouterr().err


@dataclass(frozen=True)
class _TwoInputConfig(TrainConfig):
    latent_dim: int = 3


class _TwoInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, z, c):
        return torch.tanh(self.lin(z)) * c, self.lin.weight.sum() + z[:, :1]


def test_hook_and_default_rules():
    """A generator with two inputs needs the hook; with the hook, several outputs export and match."""

    @register("test-onnx-two-input")
    class TwoInput(Family):
        config_cls = _TwoInputConfig

        def build(self, cfg):
            return {"generator": _TwoInput()}

    try:
        fam = TwoInput()
        mods = fam.build(_TwoInputConfig())
        with pytest.raises(ModelError, match="export_module"):
            export_spec(fam, mods, _TwoInputConfig())
        fam.export_module = lambda modules, cfg: (modules["generator"], (torch.zeros(1, 3), torch.ones(1, 1)),
                                                   ["z", "c"], ["y", "s"], {"z": (3,)})
        spec = export_spec(fam, mods, _TwoInputConfig())
        assert spec.latents == {"z": (3,)} and spec.input_names == ["z", "c"]
        with pytest.raises(ModelError, match="no 'generator'"):
            export_spec(TwoInput(), {"critic": nn.Linear(1, 1)}, _TwoInputConfig())
        fam.export_module = lambda modules, cfg: (modules["generator"], (torch.zeros(1, 3),), ["z", "c"], ["y"])
        with pytest.raises(ModelError, match="2 input names for 1 example"):
            export_spec(fam, mods, _TwoInputConfig())
    finally:
        unregister("test-onnx-two-input")


def test_multi_output_roundtrip(tmp_path):
    """The exporter path itself, on a two-input two-output module (no run folder): ORT == torch."""
    from b2bkg.campaign.onnx import ExportSpec, _export

    torch.manual_seed(0)
    m = _TwoInput().eval()
    spec = ExportSpec(m, (torch.zeros(1, 3), torch.ones(1, 1)), ["z", "c"], ["y", "s"])
    _export(spec, tmp_path / "m.onnx", "legacy", 17)
    s = OnnxSampler(tmp_path / "m.onnx")
    z, c = torch.randn(6, 3), torch.rand(6, 1)
    got = s.run(z=z.numpy(), c=c.numpy())
    y, sm = m(z, c)
    np.testing.assert_allclose(got["y"], y.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["s"], sm.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_dynamo_exporter(tiny_run, tmp_path):
    r = export_onnx(tiny_run, tmp_path / "d.onnx", exporter="dynamo")
    assert r["exporter"] == "dynamo" and r["opset"] >= 18 and r["max_abs_diff"] < 1e-5


# ---- every family: train tiny, export, onnxruntime == PyTorch ------------------------------
FAMILY_CASES = ["smc-nn", "smc-nn/transformer", "ecl-gan", "ecl-cov", "ecl-ae",
                "pxd-wgan",  # the small preset's coarse grid: the graph's meta must carry its grid_factor
                "pxd-event-gan", "pxd-iea-gan", "pxd-diffusion"]


def _registered(key):
    from b2bkg.training.registry import known_families

    if key.split("/")[0] not in known_families():
        pytest.skip(f"{key} is not registered")


@pytest.mark.parametrize("key", FAMILY_CASES)
def test_family_export_matches_pytorch(key, tmp_path, request):
    """Export the family's sampling (or skim) network; the onnxruntime path gives PyTorch's output."""
    from b2bkg.campaign.export_hooks import diffusion_images_onnx, onnx_generate, smc_predict_onnx

    _registered(key)
    train_tiny = request.getfixturevalue("train_tiny_fn")
    run_dir = train_tiny(key, tmp_path)
    r = export_onnx(run_dir, tmp_path / "m.onnx", exporter="legacy")
    run = load_run(run_dir)
    s = OnnxSampler(r["path"], threads=1)
    assert s.meta["model"] == run.family.name and r["opset"] == 17
    cpu = torch.device("cpu")
    events = np.array([4, 0, 1000003])
    if key.startswith("smc-nn"):
        from b2bkg.selmc.models.family import predict
        from b2bkg.selmc.simulate import iter_smc_chunks

        ev = next(iter_smc_chunks(20, 5, sample="mixed", chunk_size=20))
        ref = predict(run.modules["net"], run.cfg, ev, batch_size=7)
        got = smc_predict_onnx(s, ev, batch_size=9)  # other batches: other padded lengths L, T
        assert got.shape == ref.shape == (20, len(run.cfg.skims))
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    elif key == "pxd-diffusion":
        from b2bkg.pxd.models.diffusion import sample_images

        with torch.no_grad():
            ref = sample_images(run.modules["denoiser"], run.cfg, events[:2], 7, cpu)
        got = diffusion_images_onnx(s, run.cfg, events[:2], 7)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-3, atol=1e-4)
    elif key.startswith("ecl-"):
        ev = events[:2]
        with torch.no_grad():
            ref = run.family.sample_events(run.modules, run.cfg, ev, 7, cpu).numpy()  # float ADC
        got = s.sample(ev, 7)["waveforms"]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-3)
        w_ref = run.family.sample(run.modules, run.cfg, ev, 7, cpu)["ecl"].waveforms
        w_got = onnx_generate(s, ev, 7)["ecl"].waveforms
        assert w_got.shape == w_ref.shape and np.abs(w_got - w_ref).max() <= 1  # rounding at .5 may flip
        assert (w_got == w_ref).mean() > 0.999
    else:  # PXD image GANs: same latents -> same images -> same digits
        with torch.no_grad():
            ref = run.family.sample(run.modules, run.cfg, events, 7, cpu)["pxd"]
        got = onnx_generate(s, events, 7)["pxd"]
        # float32 sums differ by ~1e-5 between the runtimes, so a pixel sitting exactly at the 7-ADU
        # edge may flip: the same pixels up to 1e-3 of them, and the same charges (+-1 ADU) on those
        n_got, n_ref = np.diff(got.offsets), np.diff(ref.offsets)
        np.testing.assert_allclose(n_got, n_ref, rtol=1e-3)
        key = lambda d: ((np.repeat(np.arange(d.n_events), np.diff(d.offsets)) * 40 + d.sensor.astype(np.int64)) * 250
                         + d.ucell) * 768 + d.vcell
        k_got, k_ref = key(got), key(ref)
        common, i_got, i_ref = np.intersect1d(k_got, k_ref, return_indices=True)
        assert len(common) >= (1 - 1e-3) * max(len(k_got), len(k_ref))
        assert np.abs(got.charge[i_got].astype(int) - ref.charge[i_ref].astype(int)).max(initial=0) <= 1
        a, b = s.sample(np.arange(2), 1)["images"], s.sample(np.arange(2), 2)["images"]
        assert np.abs(a - b).max() > 1e-4  # the latents matter


@pytest.mark.parametrize("key", ["pxd-null", "pxd-fast"])
def test_table_samplers_have_no_network(key, tmp_path):
    from b2bkg.campaign.export_hooks import EXPORT_HOOKS

    _registered(key)
    with pytest.raises(ModelError, match="no network"):
        EXPORT_HOOKS[key]({}, None)
    if key == "pxd-null":  # through the whole path, on a fitted run folder
        from b2bkg.training import train

        from b2bkg.pxd.simulate import simulate_pxd

        run = train(key, simulate_pxd(2, 1, tmp_path / "d.h5"), tmp_path / "run", seed=0)
        with pytest.raises(ModelError, match="pxd-null: a numpy table sampler with no network"):
            export_onnx(run, tmp_path / "x.onnx")
