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

With ``count_rank > 0`` (:mod:`.fast`) the mean is instead a reduced-rank regression on a generic
degree-2 polynomial of the raw scale factors, times the log-linear term (then a correction)::

    mu_d   = max(p(c) . B_d, floor_d) * exp(coef_d . x),   p(c) = [1, c_k, c_i c_j (i <= j)]  (21,)

with ``B`` (21, D) of rank ``count_rank``: a background that is a sum of sources, each scaling
in its own way with the conditions, is a positive combination of such polynomials (a power-law in
log space is not), and the few shared components pool the statistics of all sensors (one
regression per (sensor, class) at 21 parameters is too noisy away from the training centre).

Nothing here knows which source drives which sensor: every number is fitted to the data.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_conditions_density", "sample_conditions_learned", "condition_features", "fit_poisson_glm",
           "fit_latent_covariance", "sample_counts", "poly_features", "fit_reduced_rank", "count_log_mean",
           "occupancy_log_factor", "fit_offset_flag"]

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


N_POLY = 21  # 1 + 5 linear + 15 products c_i c_j (i <= j) of the five continuous scales


def poly_features(cond: np.ndarray) -> np.ndarray:
    """Degree-2 polynomial of the five continuous scale factors (raw, not logs).

    Args:
        cond: conditions, shape (N, 6) or (6,), order of CONDITION_NAMES.
    Returns:
        ``[1, c_1..c_5, c_i c_j (i <= j)]``, shape (N, 21), float64.
    """
    c = np.atleast_2d(np.asarray(cond, np.float64))[:, :5]
    i, j = np.triu_indices(5)
    return np.concatenate([np.ones((len(c), 1)), c, c[:, i] * c[:, j]], axis=1)


def fit_reduced_rank(x: np.ndarray, y: np.ndarray, rank: int, iters: int = 3, ridge: float = 1e-6) -> np.ndarray:
    """Reduced-rank linear regression ``E[y] = x @ B``, ``rank(B) <= rank``, Poisson-weighted.

    Columns are scaled by ``1 / sqrt(mean)`` and rows weighted by ``1 / (their fitted rate level)``
    (iterated ``iters`` times), so each count enters with about its Poisson variance; the weighted
    least-squares fit is then projected on the ``rank`` leading right singular vectors of its
    weighted fitted values (the classic reduced-rank solution).

    Args:
        x: features, shape (N, F) (e.g. :func:`poly_features`).
        y: counts, shape (N, D).
        rank: kept rank (>= D: plain weighted least squares per column).
        ridge: relative L2 penalty (times the mean diagonal of x^T W x) for stability.
    Returns:
        B, shape (F, D).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, f = x.shape
    s = 1.0 / np.sqrt(np.maximum(y.mean(0), 1e-6))  # (D,)
    ys = y * s
    w = np.ones(n)
    b = np.zeros((f, y.shape[1]))
    for _ in range(max(iters, 1)):
        xtw = x.T * w
        a = xtw @ x
        a = a + ridge * np.trace(a) / f * np.eye(f)
        b = np.linalg.solve(a, xtw @ ys)  # (F, D) scaled
        if rank < y.shape[1]:
            fitted = np.sqrt(w)[:, None] * (x @ b)
            vt = np.linalg.svd(fitted, full_matrices=False)[2][:rank]
            b = b @ vt.T @ vt
        level = np.maximum((x @ b) * s, 0.0).mean(1)  # (N,) fitted rate / mean rate
        w = 1.0 / np.maximum(level, 0.05 * max(level.mean(), 1e-12))
    return b / s


def count_log_mean(coef: np.ndarray, x: np.ndarray, poly_b: np.ndarray, poly_floor: np.ndarray,
                   cond: np.ndarray | None) -> np.ndarray:
    """Log-means of the counts, shape (N, D) (or (D,) for one event with 1-d ``x``).

    Args:
        coef: log-linear coefficients (D, F); x: :func:`condition_features`, (N, F) or (F,).
        poly_b: reduced-rank polynomial coefficients (21, D), or empty (log-linear model only).
        poly_floor: smallest polynomial mean per dimension, (D,).
        cond: the raw conditions (N, 6) or (6,) (used with ``poly_b``).
    """
    eta = x @ coef.T
    if poly_b.size:
        p = poly_features(cond) @ poly_b  # (N, D)
        p = np.log(np.maximum(p, poly_floor))
        eta = eta + (p[0] if np.ndim(x) == 1 else p)
    return eta


def occupancy_log_factor(num: np.ndarray, den: np.ndarray, cond: np.ndarray, clip: float = 1.0) -> np.ndarray:
    """Log of a per-sensor correction factor ``(p(c) . num_s) / (p(c) . den_s)``: the ratio of two
    polynomial regressions (e.g. truth and generated occupancy), 0 where either is not positive.

    Args:
        num, den: coefficients, shape (21, S) each; cond: conditions (N, 6) or (6,).
        clip: bound of the returned log factor.
    Returns:
        log factors, shape (N, S) (or (S,) for 1-d ``cond``).
    """
    p = poly_features(cond)
    a, b = p @ num, p @ den
    f = np.where((a > 0) & (b > 0), np.log(np.maximum(a, 1e-300) / np.maximum(b, 1e-300)), 0.0)
    f = np.clip(f, -clip, clip)
    return f[0] if np.ndim(cond) == 1 else f


def fit_offset_flag(y: np.ndarray, mu: np.ndarray, x: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Poisson MLE of ``E[y_d] = mu_d exp(a_d + b_d x)`` for a two-valued regressor ``x`` (e.g. the
    standardized injection flag) and fixed means ``mu``: closed form, the fitted sums match the data
    sums on each of the two values.

    Args:
        y: counts, shape (N, D); mu: fixed means, shape (N, D).
        x: the regressor, shape (N,), two distinct values, or None (intercept only: ``b = 0``).
    Returns:
        (a (D,), b (D,)).
    """
    def log_ratio(m):
        return np.log(np.maximum(y[m].sum(0), 1e-6) / np.maximum(mu[m].sum(0), 1e-6))

    if x is None or len(np.unique(x)) != 2:
        return log_ratio(np.ones(len(y), bool)), np.zeros(y.shape[1])
    x0, x1 = np.unique(x)
    r0, r1 = log_ratio(x == x0), log_ratio(x == x1)
    b = (r1 - r0) / (x1 - x0)
    return r0 - b * x0, b
