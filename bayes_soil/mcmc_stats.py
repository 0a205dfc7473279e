"""Rank-normalised split R-hat, bulk and tail ESS (Vehtari et al. 2021) for many cells at once.

These are ArviZ's own algorithms (``arviz_stats.base.diagnostics``: ``_rhat_rank``,
``_ess_bulk``, ``_ess_tail``), written over a leading cell axis so that :func:`summary` can rank
each cell's draws once for both R-hat and bulk ESS (ranking, i.e. sorting, is most of the cost:
a climate fit has about 2,400 cells of 8,000 draws). The fit computes them once and stores them
(``fits.cell_diagnostics``); the gate and the report read them. tests/test_mcmc_stats.py checks
them against ArviZ cell by cell.

Arrays are (cells, chain, draw). A cell with any non-finite draw gives NaN, as in ArviZ.
"""

from __future__ import annotations

import numpy as np


def _split_chains(x: np.ndarray) -> np.ndarray:
    """(cells, chain, draw) -> (cells, 2 chain, draw // 2): first and last halves."""
    half = x.shape[-1] // 2
    return np.concatenate([x[..., :half], x[..., -half:]], axis=1)


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Ranks over all of a cell's draws, back-transformed to normal scores (Blom, c = 3/8)."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    flat = x.reshape(x.shape[0], -1)
    rank = rankdata(flat, method="average", axis=-1)
    size = flat.shape[-1]
    u = (rank - 3 / 8) / (size - 2 * 3 / 8 + 1)  # in the ranks' dtype, as ArviZ
    return ndtri(u.astype(float)).reshape(x.shape)


def _rhat_basic(x: np.ndarray) -> np.ndarray:
    n = x.shape[-1]
    chain_mean = x.mean(axis=-1)
    between = n * np.var(chain_mean, axis=-1, ddof=1)
    within = np.var(x, axis=-1, ddof=1).mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((between / within + n - 1) / n)


def _valid(x: np.ndarray, min_chains: int) -> np.ndarray:
    """ArviZ's ``not_valid``, negated: every draw finite, enough chains and draws."""
    ok = np.isfinite(x).reshape(x.shape[0], -1).all(axis=-1)
    return ok & (x.shape[1] >= min_chains) & (x.shape[2] >= 4)


def _as_array(x) -> np.ndarray:
    """Keep a float array's own precision (ArviZ folds and takes quantiles in it)."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(float)


def summary(x: np.ndarray, prob: float | None = None) -> dict[str, np.ndarray]:
    """R-hat, bulk ESS and tail ESS per cell, sharing the ranks of the bulk between R-hat and
    bulk ESS (sorting draws is most of the cost)."""
    x = _as_array(x)
    n = x.shape[0]
    out = {k: np.full(n, np.nan) for k in ("rhat", "ess_bulk", "ess_tail")}
    ok = _valid(x, min_chains=1)
    if not ok.any():
        return out
    xo = x[ok]
    s = _split_chains(xo)
    z = _z_scale(s)
    out["ess_bulk"][ok] = _ess(z)
    if x.shape[1] >= 2:
        folded = np.abs(s - np.median(s.reshape(s.shape[0], -1), axis=-1)[:, None, None])
        out["rhat"][ok] = np.maximum(_rhat_basic(z), _rhat_basic(_z_scale(folded)))
    out["ess_tail"][ok] = _ess_tail(xo, prob)
    return out


def _ess_tail(xo: np.ndarray, prob: float | None) -> np.ndarray:
    from arviz_stats.validate import validate_ci_prob

    prob = validate_ci_prob(prob)
    flat = xo.reshape(xo.shape[0], -1)
    tails = []
    for p in sorted((prob, 1 - prob)):
        q = np.quantile(flat, p, axis=-1)
        tails.append(_ess(_split_chains(xo <= q[:, None, None])))
    return np.minimum(*tails)


def _ess(x: np.ndarray) -> np.ndarray:
    """ESS of each cell's (chain, draw) array: Geyer's initial positive and monotone sequences
    on the chain-averaged autocorrelation, exactly as ArviZ's ``_ess``."""
    from scipy.fftpack import next_fast_len

    x = np.asarray(x, dtype=float)
    n_cells, n_chain, n_draw = x.shape
    size = n_chain * n_draw
    const = (x.max(axis=(1, 2)) - x.min(axis=(1, 2))) < np.finfo(float).resolution
    m = next_fast_len(2 * n_draw)
    centred = x - x.mean(axis=-1, keepdims=True)
    f = np.fft.rfft(centred, n=m, axis=-1)
    f *= np.conjugate(f)
    acov = np.fft.irfft(f, n=m, axis=-1)[..., :n_draw] / n_draw
    chain_mean = x.mean(axis=-1)
    mean_var = np.mean(acov[:, :, 0], axis=1) * n_draw / (n_draw - 1.0)
    var_plus = mean_var * (n_draw - 1.0) / n_draw
    if n_chain > 1:
        var_plus = var_plus + np.var(chain_mean, axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):

        def rho(t: int) -> np.ndarray:
            return 1.0 - (mean_var - np.mean(acov[:, :, t], axis=1)) / var_plus

        rho_t = np.zeros((n_cells, n_draw))
        rho_t[:, 0] = 1.0
        even, odd = np.ones(n_cells), rho(1)
        rho_t[:, 1] = odd
        # Geyer's initial positive sequence: per cell, stop at the first pair summing <= 0
        t = np.ones(n_cells, dtype=int)
        active = (t < n_draw - 3) & (even + odd > 0.0)
        step = 1
        while active.any():
            e_new, o_new = rho(step + 1), rho(step + 2)
            even = np.where(active, e_new, even)
            odd = np.where(active, o_new, odd)
            keep = active & (even + odd >= 0)
            rho_t[keep, step + 1] = even[keep]
            rho_t[keep, step + 2] = odd[keep]
            t = np.where(active, t + 2, t)
            step += 2
            active = active & (t < n_draw - 3) & (even + odd > 0.0)
        max_t = t - 2
        rows = np.arange(n_cells)
        fix = even > 0
        rho_t[rows[fix], max_t[fix] + 1] = even[fix]
        # Geyer's initial monotone sequence (pair sums never increase)
        for s in range(1, int(max_t.max(initial=0)) - 1, 2):
            on = s <= max_t - 2
            prev = rho_t[:, s - 1] + rho_t[:, s]
            up = on & (rho_t[:, s + 1] + rho_t[:, s + 2] > prev)
            rho_t[up, s + 1] = prev[up] / 2.0
            rho_t[up, s + 2] = prev[up] / 2.0
        upto = np.arange(n_draw)[None, :] <= max_t[:, None]
        tau = -1.0 + 2.0 * np.where(upto, rho_t, 0.0).sum(axis=1) + rho_t[rows, max_t + 1]
        tau = np.maximum(tau, 1 / np.log10(size))
        ess = size / tau
        ess = np.where(np.isnan(rho_t).any(axis=1), np.nan, ess)
    return np.where(const, float(size), ess)
