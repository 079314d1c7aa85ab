from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from b2bkg.core.conditions import CONDITION_NAMES, ConditionsConfig, resolve_conditions, sample_conditions
from b2bkg.core.config import apply_overrides, check_range, from_dict, load_config, to_dict
from b2bkg.core.errors import ConfigError
from b2bkg.core.seeding import event_rng, torch_generator


@dataclass(frozen=True)
class Inner:
    width: int = 4


@dataclass(frozen=True)
class Cfg:
    lr: float = 1e-4
    steps: int = 10
    name: str = "a"
    channels: tuple[int, ...] = (1, 2)
    inner: Inner = Inner()

    def __post_init__(self):
        check_range("steps", self.steps, 1, None)


def test_config_roundtrip_and_overrides(tmp_path):
    c = apply_overrides(Cfg(), ["steps=20", "inner.width=8", "channels=[3, 4, 5]"])
    assert c.steps == 20 and c.inner.width == 8 and c.channels == (3, 4, 5)
    assert from_dict(Cfg, to_dict(c)) == c
    p = tmp_path / "c.yaml"
    p.write_text("lr: 0.5\n")
    assert load_config(Cfg, p).lr == 0.5
    # YAML 1.1 reads exponents without a dot as strings: floats still parse
    assert apply_overrides(Cfg(), ["lr=1e-6"]).lr == 1e-6
    p.write_text("lr: 3E-5\n")
    assert load_config(Cfg, p).lr == 3e-5


@pytest.mark.parametrize(
    "data,match",
    [
        ({"stepz": 1}, "stepz: unknown key"),
        ({"steps": "ten"}, "steps: 'ten' is not an integer"),
        ({"steps": 0}, r"steps: 0 is out of range \[1, inf\]"),
        ({"lr": True}, "lr: True is not a number"),
        ({"lr": "1e-"}, "lr: '1e-' is not a number"),
        ({"inner": {"w": 1}}, "inner.w: unknown key"),
    ],
)
def test_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Cfg, data)


def test_override_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(Cfg(), ["nope=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(Cfg(), ["steps"])


def test_bad_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Cfg, p)


def test_seeding_is_per_event_and_stable():
    a = event_rng(5, "x", 3).random(4)
    assert np.array_equal(a, event_rng(5, "x", 3).random(4))
    assert not np.array_equal(a, event_rng(5, "x", 4).random(4))
    assert not np.array_equal(a, event_rng(5, "y", 3).random(4))
    assert not np.array_equal(a, event_rng(6, "x", 3).random(4))
    import torch

    assert torch.equal(torch.randn(3, generator=torch_generator(1, "g", 2)), torch.randn(3, generator=torch_generator(1, "g", 2)))
    with pytest.raises(ConfigError, match="seed"):
        event_rng(-1, "x", 0)


def test_conditions_model():
    cfg = ConditionsConfig(lumi_scale=2.0)
    v = np.array([sample_conditions(cfg, event_rng(1, "c", i)) for i in range(2000)])
    assert v.shape == (2000, len(CONDITION_NAMES))
    assert abs(v[:, 0].mean() / 2.0 - 1) < 0.02
    # luminosity follows the product of the currents: positive correlation
    assert np.corrcoef(v[:, 0], v[:, 1])[0, 1] > 0.3
    src = resolve_conditions(None)
    assert src.get(0, event_rng(1, "c", 0)).shape == (len(CONDITION_NAMES),)
    with pytest.raises(ConfigError, match="lumi_scale"):
        ConditionsConfig(lumi_scale=-1)


def test_conditions_from_file_are_reused(tmp_path, tiny_conditions):
    from b2bkg.io import write_file

    p = tmp_path / "c.h5"
    write_file(p, seed=1, conditions=tiny_conditions)
    src = resolve_conditions(p)
    np.testing.assert_allclose(src.get(2, None), tiny_conditions.values[2])


def test_fixed_length_tuple_field():
    @dataclass(frozen=True)
    class G:
        grid: tuple[int, int] = (8, 24)

    assert from_dict(G, {"grid": [4, 12]}).grid == (4, 12)


def test_simulator_hash_pins_source_and_config():
    from b2bkg.core.provenance import physics_mismatch, simulator_hash

    a = simulator_hash("pxd", {"x": 1.0})
    assert a == simulator_hash("pxd", {"x": 1.0}) and len(a) == 16
    assert a != simulator_hash("pxd", {"x": 1.5}) and a != simulator_hash("ecl", {"x": 1.0})
    with pytest.raises(ValueError, match="unknown simulator"):
        simulator_hash("svd")
    assert physics_mismatch({"truth": {"simulator_hash": a}, "real": {}}) is None
    assert "different simulator" in physics_mismatch({"t": {"simulator_hash": a}, "f": {"simulator_hash": "0" * 16}})


def test_simulated_files_record_their_simulator(tmp_path):
    from b2bkg.core.config import to_dict
    from b2bkg.core.provenance import simulator_hash
    from b2bkg.io import open_file
    from b2bkg.pxd.simulate import PxdSimConfig, simulate_pxd

    simulate_pxd(1, 3, tmp_path / "p.h5")
    with open_file(tmp_path / "p.h5") as f:
        assert f.meta["simulator_hash"] == simulator_hash("pxd", to_dict(PxdSimConfig()))
