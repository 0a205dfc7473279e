"""Slow tier plumbing check: posterior ``rate_mean`` agrees in sign and rough size with the OLS
stage slopes where those are well determined (same harmonized rows on both sides).

Not a requirement of equality: OLS pools studies naively within a stage while the hierarchical
model uses within-chronosequence contrasts, so only clear cells are compared.
"""

from __future__ import annotations

import numpy as np
import pytest

from bayes_soil.frequentist.rates import stage_rates
from bayes_soil.harmonize import load_harmonized
from bayes_soil.models import get_model

pytestmark = pytest.mark.slow


def test_rate_mean_agrees_with_clear_ols_slopes():
    layers = load_harmonized(None).layers  # the demo: enough rows for clear OLS cells
    c_layers = layers[layers["element"] == "C"]
    model = get_model("hier_rates", {"data": {"elements": ["C"]}})
    dt = model.fit(c_layers, seed=1, chains=2, draws=300, tune=300, progressbar=False)
    rate_mean = dt["posterior"]["rate_mean"].mean(("chain", "draw"))

    ols = stage_rates(c_layers)
    clear = ols[
        (ols["vegetation"] == "all") & (ols["status"] == "ok") & (ols["k"].abs() > 3 * ols["se"])
    ]
    assert len(clear) >= 4, "the simulation should give several well-determined OLS cells"
    post = np.array(
        [
            float(rate_mean.sel(element="C", stage=r.stage, layer=r.layer))
            for r in clear.itertuples()
        ]
    )
    k = clear["k"].to_numpy()
    same_sign = np.sign(post) == np.sign(k)
    assert same_sign.mean() >= 0.8, clear.assign(posterior=post)
    ratio = post[same_sign] / k[same_sign]
    assert 0.33 < np.median(ratio) < 3, clear.assign(posterior=post)
