"""Mode-collapse check of the PXD image GANs (b2bkg.pxd.metrics.diversity_check, also shown by b2bkg evaluate --train)."""

from __future__ import annotations

import numpy as np
import pytest

from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits
from b2bkg.pxd.metrics import diversity_check, image_features


def _events(rng, n, mean_hits):
    out = []
    for _ in range(n):
        key = np.unique(rng.integers(0, N_SENSORS * N_UCELLS * N_VCELLS, rng.poisson(mean_hits * rng.uniform(0.2, 1.8))))
        out.append({"sensor": key // (N_UCELLS * N_VCELLS), "ucell": key // N_VCELLS % N_UCELLS, "vcell": key % N_VCELLS,
                    "charge": np.full(len(key), 20)})
    return PxdDigits.from_events(out)


def test_image_features_count_hits_per_block():
    d = PxdDigits([0, 3], sensor=[5, 5, 6], ucell=[0, 24, 249], vcell=[0, 23, 767], charge=[10, 10, 10])
    f = image_features(d)
    assert f.shape == (1, N_SENSORS, 10 * 32)
    assert f[0, 5, 0] == pytest.approx(np.log1p(2)) and f[0, 6, -1] == pytest.approx(np.log1p(1))
    assert f.sum() == pytest.approx(np.log1p(2) + np.log1p(1))


def test_collapse_and_memorisation_are_visible():
    rng = np.random.default_rng(0)
    train, truth = _events(rng, 6, 4000), _events(rng, 6, 4000)
    ok = diversity_check(truth, train, truth)
    assert ok["occ_std_pct_gen"] == pytest.approx(ok["occ_std_pct_truth"])
    assert ok["nn_train_gen"] == pytest.approx(ok["nn_train_truth"]) and ok["nn_train_truth"] > 0
    # a generator that repeats one training event: no spread, zero distance to training and to itself
    copy = PxdDigits.concat([train.slice(0, 1)] * 4)
    bad = diversity_check(copy, train, truth)
    assert bad["occ_std_pct_gen"] < 0.5 * ok["occ_std_pct_truth"]
    assert bad["nn_train_gen"] == 0.0 and bad["nn_self_gen"] == 0.0 and bad["nn_self_truth"] > 0
