"""The vectorised R-hat / ESS equal ArviZ's per-cell functions (to rounding)."""

import numpy as np
import pytest

from bayes_soil import mcmc_stats


def _cells(seed: int = 0, chains: int = 4, draws: int = 300) -> np.ndarray:
    """Cells of every kind the gate meets: white noise, slow AR(1) chains, chains that
    disagree, anti-correlated draws, ties (P(break) near 0 or 1), constants, NaN."""
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal((chains, draws))]
    for phi in (0.5, 0.95, 0.995, -0.6):
        e = rng.standard_normal((chains, draws))
        x = np.zeros_like(e)
        for t in range(1, draws):
            x[:, t] = phi * x[:, t - 1] + e[:, t]
        out.append(x)
    out.append(rng.standard_normal((chains, draws)) + np.arange(chains)[:, None])  # disagree
    out.append(np.round(rng.uniform(0, 1, (chains, draws)) ** 8, 2))  # many ties
    out.append(np.full((chains, draws), 0.7))  # constant
    nan = rng.standard_normal((chains, draws))
    nan[-1, 5] = np.nan
    out.append(nan)
    return np.stack(out)


@pytest.mark.parametrize(
    ("chains", "draws", "dtype"),
    [(4, 300, float), (4, 300, np.float32), (2, 57, float), (1, 40, float)],
)
def test_rhat_and_ess_equal_arviz_cell_by_cell(chains, draws, dtype):
    """Fits store per-cell effects in single precision: ArviZ folds and ranks them in it."""
    import warnings

    from arviz_stats.base import array_stats

    x = _cells(chains=chains, draws=draws).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want_r = array_stats.rhat(x)
        want_b = array_stats.ess(x, method="bulk")
        want_t = array_stats.ess(x, method="tail", prob=0.89)
        got = mcmc_stats.summary(x)  # ArviZ's default tail probability is ci_prob, 0.89
    # single precision: folding and ranking in float32 agree to rounding (7e-10 measured)
    rtol = 1e-10 if dtype is float else 1e-8
    np.testing.assert_allclose(got["rhat"], want_r, rtol=rtol, equal_nan=True)
    np.testing.assert_allclose(got["ess_bulk"], want_b, rtol=10 * rtol, equal_nan=True)
    np.testing.assert_allclose(got["ess_tail"], want_t, rtol=10 * rtol, equal_nan=True)
    # the cases are not trivial: slow chains have far fewer effective draws than white noise
    assert np.isnan(want_b[-1]) and (chains == 1 or want_b[3] < 0.2 * want_b[0])
