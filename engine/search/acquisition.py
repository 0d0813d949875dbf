"""The batch's acquisition on a GP whose kernel hyperparameters are fixed: the posterior
conditioned on pending trials and on points already picked, log expected improvement, the
kriging believer's greedy batch and Thompson samples. ``engine.search.bayes`` fits the GP and
builds the candidates; this module only chooses among them (no hyperparameter fit, no refit per
point: rank-one updates)."""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_BATCH_DISTANCE = 0.02  # no two points of one batch closer than this in the unit cube
XI = 0.0  # EI's margin (standardized units): skopt's 0.01 is ~0.5 on Branin, where it
# stopped the endgame at 10x Optuna's regret; Optuna's LogEI has none


class Posterior:
    """The GP with fixed hyperparameters, conditioned on the data and on the lies (pending
    trials and points already in the batch, believed at their posterior mean, or at the worst
    value for "cl_max"): one Cholesky, no hyperparameter fit.

    A lie is conditioned on as a noisy observation, with the fitted noise, as a real result
    would be: a fantasy is no surer than a measurement. Conditioned on without noise, each pick
    left no variance around itself, and on a noisy objective the believer spread the rest of the
    batch far from the incumbent: on the noisy 4-d benchmark at batch 8, median regret after 32
    trials 0.0089 against TPE's 0.0082 over 100 seeds; with the noise, 0.0081 (README).
    """

    def __init__(
        self, signal: Any, noise: float, X: np.ndarray, y: np.ndarray,
        X_lies: np.ndarray | None, fill: str,
    ) -> None:
        amp = float(signal(X[:1])[0, 0])
        self.noise = max(noise, 1e-6 * amp)  # of the data and of the lies (above)
        gp = fixed_gp(signal, X, y, np.full(len(y), self.noise))
        self.y_opt = float(gp.predict(X).min())  # plug-in incumbent: robust to noise
        self.lie = float(y.max()) if fill == "cl_max" else None
        if X_lies is not None and len(X_lies):
            lies = gp.predict(X_lies) if self.lie is None else np.full(len(X_lies), self.lie)
            if self.lie is None:
                self.y_opt = min(self.y_opt, float(lies.min()))
            alpha = np.concatenate([gp.alpha, np.full(len(lies), self.noise)])
            gp = fixed_gp(signal, np.vstack([X, X_lies]), np.concatenate([y, lies]), alpha)
        self.gp = gp

    def at(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, variance, and L^-1 K(X, C) (for covariance columns) at candidates ``C``."""
        from scipy.linalg import solve_triangular

        mu, sd = self.gp.predict(C, return_std=True)
        V = solve_triangular(self.gp.L_, self.gp.kernel_(self.gp.X_train_, C), lower=True)
        return mu, sd**2, V

    def log_ei_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """log EI at one point and its exact gradient (Matern 5/2 differentiated by hand: exact
        where finite differences of the posterior variance cancel, near observed points, and
        one kernel row per step instead of d + 1 predictions)."""
        from scipy.linalg import cho_solve
        from scipy.special import log_ndtr

        gp = self.gp
        amp, ls = float(gp.kernel_.k1.constant_value), np.asarray(gp.kernel_.k2.length_scale, dtype=float)
        diff = (x[None, :] - gp.X_train_) / ls  # n x d, in length scales
        r = np.sqrt(np.maximum((diff**2).sum(axis=1), 0.0))
        e = np.exp(-np.sqrt(5.0) * r)
        k = amp * (1.0 + np.sqrt(5.0) * r + 5.0 / 3.0 * r**2) * e
        dk = (-amp * 5.0 / 3.0 * (1.0 + np.sqrt(5.0) * r) * e)[:, None] * diff / ls  # n x d
        mean = float(k @ gp.alpha_)
        w = cho_solve((gp.L_, True), k)
        var = max(amp - float(k @ w), 1e-18)
        sd = np.sqrt(var)
        dmean, dsd = dk.T @ gp.alpha_, -(dk.T @ w) / sd
        z = (self.y_opt - mean - XI) / sd
        lh = float(log_h(np.array([z]))[0])
        ratio = float(np.exp(log_ndtr(z) - lh))  # h'(z) / h(z), h' = Phi
        grad = ratio * (-dmean - z * dsd) / sd + dsd / sd
        return lh + float(np.log(sd)), grad

    def column(self, C: np.ndarray, V: np.ndarray, j: int) -> np.ndarray:
        """The posterior covariance between every candidate and candidate ``j``."""
        return self.gp.kernel_(C, C[j : j + 1])[:, 0] - V.T @ V[:, j]


def fixed_gp(signal: Any, X: np.ndarray, y: np.ndarray, alpha: np.ndarray) -> Any:
    from sklearn.gaussian_process import GaussianProcessRegressor

    return GaussianProcessRegressor(kernel=signal, alpha=alpha, optimizer=None).fit(X, y)


def stack(
    a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]), np.hstack([a[2], b[2]])


def believe(
    post: Posterior, C: np.ndarray, stats: tuple[np.ndarray, np.ndarray, np.ndarray], n: int,
    fill: str,
) -> list[int]:
    """Greedy batch by expected improvement: after each pick, condition the candidates on it
    (a rank-one update; the believer's lie leaves the mean unchanged) and pick again."""
    mu, var, V = stats
    U = np.zeros((n, len(C)))
    allowed = np.ones(len(C), dtype=bool)
    y_opt, chosen = post.y_opt, []
    for t in range(n):
        ei = np.where(allowed, log_ei(mu, var, y_opt), -np.inf)
        j = int(np.argmax(ei))
        col = post.column(C, V, j) - U[:t].T @ U[:t, j]
        s = max(col[j], 0.0) + post.noise
        U[t] = col / np.sqrt(s)
        var = np.maximum(var - U[t] ** 2, 1e-12)
        if post.lie is None:
            y_opt = min(y_opt, float(mu[j]))
        else:
            mu = mu + U[t] * (post.lie - mu[j]) / np.sqrt(s)
        chosen.append(j)
        allowed = spread(C, j, allowed, chosen)
    return chosen


def thompson(post: Posterior, C: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """Each point the minimum of one joint posterior sample over the candidates."""
    mu, cov = post.gp.predict(C, return_cov=True)
    L = np.linalg.cholesky(cov + 1e-6 * np.eye(len(C)) * max(float(cov.diagonal().max()), 1e-12))
    samples = mu[:, None] + L @ rng.standard_normal((len(C), n))
    allowed = np.ones(len(C), dtype=bool)
    chosen: list[int] = []
    for t in range(n):
        j = int(np.argmin(np.where(allowed, samples[:, t], np.inf)))
        chosen.append(j)
        allowed = spread(C, j, allowed, chosen)
    return chosen


def spread(C: np.ndarray, j: int, allowed: np.ndarray, chosen: list[int]) -> np.ndarray:
    """Rule out candidates within MIN_BATCH_DISTANCE of pick ``j`` (only chosen ones if that
    would leave none: a tiny discrete space)."""
    allowed = allowed & (np.linalg.norm(C - C[j], axis=1) >= MIN_BATCH_DISTANCE)
    if not allowed.any():
        allowed = np.ones(len(C), dtype=bool)
        allowed[chosen] = False
    return allowed


def log_ei(mu: np.ndarray, var: np.ndarray, y_opt: float) -> np.ndarray:
    """log expected improvement below ``y_opt`` (minimization, standardized units), computed
    stably where EI itself underflows to 0 (Ament et al. 2023, "Unexpected Improvements to
    Expected Improvement", eq. 9; Optuna's ``standard_logei``): far from the incumbent every
    candidate's EI is 0.0 in floating point, and a tie broken by index is no choice at all."""
    sd = np.sqrt(np.maximum(var, 1e-18))
    return log_h((y_opt - mu - XI) / sd) + np.log(sd)


def log_h(z: np.ndarray) -> np.ndarray:
    """log(z * Phi(z) + phi(z)), the log EI of a standard normal at margin ``z``."""
    from scipy.special import erfc, erfcx

    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    big = z > -25
    zb = z[big]
    out[big] = np.log(0.5 * zb * erfc(-zb / np.sqrt(2)) + np.exp(-0.5 * zb * zb) / np.sqrt(2 * np.pi))
    zs = z[~big]
    out[~big] = (-0.5 * zs * zs - 0.5 * np.log(2 * np.pi)
                 + np.log1p(np.sqrt(np.pi / 2) * zs * erfcx(-zs / np.sqrt(2))))
    return out
