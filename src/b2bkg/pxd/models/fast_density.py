"""Per-event densities of ``pxd-fast``: beam conditions, and cluster counts given the conditions.

Conditions (the file's ``conditions`` group, columns of :data:`b2bkg.core.conditions.CONDITION_NAMES`):
a multivariate normal on the log of the five continuous scales plus a Bernoulli injection flag,
fitted by moments.

Cluster counts ``n[d]`` for ``D = 40 * K`` dimensions (sensor x cluster-size class) follow a
Poisson-lognormal model whose log-mean is linear in standardized log-conditions::

    x      = [1, (log c_k - mean_k) / std_k ..., injection - mean, (squares)]  (F,)
    eta_d  = coef[d] . x                                                    Poisson GLM (IRLS, ridge)
    lam_d  = exp(eta_d + (L z)_d + sqrt(diag_d) eps_d - (|L_d|^2 + diag_d) / 2),   z ~ N(0, I_r), eps ~ N(0, 1)
    n_d    ~ Poisson(lam_d)

so ``E[n | c] = exp(eta)`` and the latent covariance ``L L^T + diag(diag)`` (low rank + diagonal)
carries the event-to-event correlations not explained by the conditions. It is estimated by moments
of the normalized residuals ``rho = (n - mu) / mu``: for a Poisson-lognormal,
``E[rho_i rho_j] = exp(S_ij) - 1`` (i != j) and ``E[rho_i^2] = 1 / mu_i + exp(S_ii) - 1``.

Nothing here knows which source drives which sensor: every number is fitted to the data.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_conditions_density", "sample_conditions_learned", "condition_features", "fit_poisson_glm",
           "fit_latent_covariance", "sample_counts"]

N_COND = 6  # lumi, her_current, ler_current, her_vacuum, ler_vacuum, injection
_MIN_INJ = 5  # injection flag used as a regressor only with >= 5 events of each value


def fit_conditions_density(cond: np.ndarray) -> dict[str, np.ndarray]:
    """Moments of the training conditions.

    Args:
        cond: conditions, shape (N, 6), order of CONDITION_NAMES (scale factors; injection 0/1).
    Returns:
        ``log_mean`` (5,), ``log_chol`` (5, 5) Cholesky factor of the log covariance, ``inj_prob``
        (1,), and the regression standardization ``feat_mean`` (6,), ``feat_std`` (6,), ``feat_used`` (6,)
        (1.0 where the column varies enough to be a regressor).
    """
    cond = np.asarray(cond, np.float64)
    logc = np.log(np.clip(cond[:, :5], 1e-6, None))
    mean = logc.mean(0)
    cov = np.cov(logc, rowvar=False) if len(logc) > 1 else np.zeros((5, 5))
    cov = np.atleast_2d(cov) + 1e-12 * np.eye(5)
    chol = np.linalg.cholesky(cov)
    inj = cond[:, 5]
    feat = np.concatenate([logc, inj[:, None]], axis=1)
    fmean, fstd = feat.mean(0), feat.std(0)
    used = fstd > 1e-6
    n_inj = int((inj > 0.5).sum())
    used[5] = used[5] and min(n_inj, len(inj) - n_inj) >= _MIN_INJ
    return {"log_mean": mean, "log_chol": chol, "inj_prob": np.array([inj.mean() if len(inj) else 0.0]),
            "feat_mean": fmean, "feat_std": np.where(used, fstd, 1.0), "feat_used": used.astype(np.float64)}


def sample_conditions_learned(log_mean: np.ndarray, log_chol: np.ndarray, inj_prob: float,
                              rng: np.random.Generator) -> np.ndarray:
    """One event's conditions from the learned density, shape (6,), float64."""
    z = rng.standard_normal(5)
    c = np.exp(log_mean + log_chol @ z)
    return np.concatenate([c, [float(rng.random() < inj_prob)]])


def condition_features(cond: np.ndarray, feat_mean: np.ndarray, feat_std: np.ndarray, feat_used: np.ndarray,
                       quadratic: bool | str = False) -> np.ndarray:
    """Regression features of conditions (N, 6): ``[1, standardized log c (5), injection - mean]``
    (N, 7); with ``quadratic`` (True or ``"squares"``) also the squares of the five standardized
    log-scales (N, 12): a sum of sources with different power laws is not a single power law; with
    ``"full"`` also their 10 pairwise products (N, 22), for training data whose conditions vary
    together over a wide range. Unused columns are 0."""
    if quadratic not in (False, True, "squares", "full"):
        raise ValueError(f"quadratic: {quadratic!r} is not one of False, True, 'squares', 'full'")
    cond = np.atleast_2d(np.asarray(cond, np.float64))
    f = np.concatenate([np.log(np.clip(cond[:, :5], 1e-6, None)), cond[:, 5:6]], axis=1)
    f = (f - feat_mean) / feat_std * feat_used
    parts = [np.ones((len(f), 1)), f]
    if quadratic:
        parts.append(f[:, :5] ** 2)
    if quadratic == "full":
        i, j = np.triu_indices(5, k=1)
        parts.append(f[:, i] * f[:, j])
    return np.concatenate(parts, axis=1)


def fit_poisson_glm(x: np.ndarray, y: np.ndarray, ridge: float = 1e-2, iters: int = 25) -> np.ndarray:
    """Poisson regression ``E[y_d] = exp(coef_d . x)`` for every column d at once (Newton/IRLS).

    Args:
        x: features, shape (N, F), column 0 = 1 (intercept, not penalized).
        y: counts, shape (N, D).
        ridge: L2 penalty on the non-intercept coefficients (features are standardized), per event.
    Returns:
        coef, shape (D, F).
    """
    n, f = x.shape
    d = y.shape[1]
    coef = np.zeros((d, f))
    coef[:, 0] = np.log(y.mean(0) + 1e-3)
    pen = np.full(f, ridge * n)
    pen[0] = 0.0
    for _ in range(iters):
        mu = np.exp(np.clip(x @ coef.T, -30, 30))  # (N, D)
        grad = (y - mu).T @ x - pen * coef  # (D, F)
        hess = np.einsum("nf,nd,ng->dfg", x, mu, x) + np.diag(pen)[None] + 1e-9 * np.eye(f)[None]
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        coef += step
        if np.abs(step).max() < 1e-8:
            break
    return coef


def fit_latent_covariance(y: np.ndarray, mu: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Low-rank + diagonal latent covariance of a Poisson-lognormal from counts and fitted means.

    Args:
        y: counts, shape (N, D); mu: fitted means, shape (N, D).
        rank: number of factors kept.
    Returns:
        (load (D, rank), diag (D,)), latent log-scale covariance ~ load @ load.T + diag(diag).
    """
    n, d = y.shape
    mu = np.maximum(mu, 1e-3)
    rho = (y - mu) / mu
    m = rho.T @ rho / max(n, 1)
    m[np.diag_indices(d)] -= (1.0 / mu).mean(0)
    s = np.log(np.clip(1.0 + m, 0.5, None))
    s = 0.5 * (s + s.T)
    if rank > 0:
        w, v = np.linalg.eigh(s)
        top = np.argsort(w)[::-1][:rank]
        load = v[:, top] * np.sqrt(np.clip(w[top], 0.0, None))
    else:
        load = np.zeros((d, 0))
    diag = np.clip(np.diag(s) - (load**2).sum(1), 0.0, None)
    return load, diag


def sample_counts(eta: np.ndarray, load: np.ndarray, diag: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One event's counts, shape (D,) int64, given the GLM log-means ``eta`` (D,)."""
    z = rng.standard_normal(load.shape[1])
    eps = rng.standard_normal(len(eta))
    lat = load @ z + np.sqrt(diag) * eps - 0.5 * ((load**2).sum(1) + diag)
    # log-mean capped at log(2e5) (a sensor has 192 000 pixels): extrapolating the quadratic
    # regression far outside the trained conditions must not ask for billions of clusters
    return rng.poisson(np.exp(np.clip(eta + lat, -30, np.log(2e5))))
