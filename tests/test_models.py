"""Model tier (build, no sampling) and fast checks of the registry, specs, data prep and CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from model_frames import changes_from_layers, make_changes, make_layers

from bayes_soil.cli import main
from bayes_soil.errors import InputError
from bayes_soil.models import REGISTRY, get_model
from bayes_soil.models.base import check_sampler, deep_merge
from bayes_soil.models.hier_rates import stage_basis


# ---- fast ----------------------------------------------------------------------------------
def test_registry_lists_both_models_with_specs(capsys):
    assert {"hier_rates", "climate_breakpoints"} <= set(REGISTRY)
    for cls in REGISTRY.values():
        assert cls.spec_path().is_file()
        assert cls.description()
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "hier_rates:" in out and "climate_breakpoints.toml" in out


def test_unknown_model_and_sampler_are_input_errors():
    with pytest.raises(InputError, match="unknown model"):
        get_model("nope")
    with pytest.raises(InputError, match="unknown sampler"):
        check_sampler("stan")


def test_numpyro_missing_gives_install_hint():
    import importlib.util

    if importlib.util.find_spec("numpyro") and importlib.util.find_spec("jax"):
        pytest.skip("numpyro is installed here")
    with pytest.raises(InputError, match=r"pip install 'bayes_soil\[numpyro\]'"):
        check_sampler("numpyro")


def test_spec_merge_overrides_without_touching_defaults():
    m = get_model("hier_rates", {"data": {"elements": ["C"]}, "priors": {"tau": 0.3}})
    assert m.spec["data"]["elements"] == ["C"]
    assert m.spec["priors"]["tau"] == 0.3
    assert m.spec["priors"]["sigma"] == 1.0  # default kept
    assert get_model("hier_rates").spec["data"]["elements"] == ["C", "N"]
    assert deep_merge({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_stage_basis_in_decades_last_stage_open():
    b = stage_basis(np.array([0.0, 3.0, 12.0, 45.0]), 5)
    np.testing.assert_allclose(b[1], [0.3, 0, 0, 0, 0])
    np.testing.assert_allclose(b[2], [0.5, 0.5, 0.2, 0, 0])
    np.testing.assert_allclose(b[3], [0.5, 0.5, 1.0, 1.0, 1.5])
    # with three fitted stages the third is open-ended
    np.testing.assert_allclose(stage_basis(np.array([45.0]), 3)[0], [0.5, 0.5, 3.5])


def test_hier_prepare_standardises_and_drops_total_layer():
    layers = make_layers(seed=3, n_studies=9)
    d = get_model("hier_rates").prepare(layers)
    assert d.coords["fit_layer"] == ["0-20", "20-100", "100-200"]
    assert d.n_obs == (layers["layer"] != "0-200").sum()
    y, e, lay = d.arrays["stock"], d.arrays["element_idx"], d.arrays["layer_idx"]
    for ei in range(2):
        for li in range(3):
            sel = (e == ei) & (lay == li)
            assert abs(y[sel].mean()) < 1e-9 and y[sel].std() == pytest.approx(1.0)
    # scale brings rates back to Mg ha-1 yr-1: stock = loc + scale * y
    assert d.meta["scale"].shape == (2, 3)
    # each unit cell belongs to one element and layer, and one site cell (or none)
    assert len(d.coords["unit_cell"]) == d.arrays["unit_cell_element"].size
    assert d.arrays["unit_cell_site"].max() <= len(d.coords["site_cell"])


def test_hier_prepare_rejects_unusable_data():
    layers = make_layers(seed=3, n_studies=6)
    with pytest.raises(InputError, match="no layer stocks"):
        get_model("hier_rates", {"data": {"elements": ["N"]}}).prepare(
            layers[layers["element"] == "C"]
        )
    with pytest.raises(InputError, match="lacks column"):
        get_model("hier_rates").prepare(layers.drop(columns=["years"]))


def test_climate_prepare_bounds_psi_inside_observed_range():
    ch = make_changes(seed=1, n_studies=20)
    m = get_model("climate_breakpoints")
    d = m.prepare(ch)
    assert d.coords["driver"] == ["map_mm", "mat_c"]
    assert d.coords["layer"] == ["0-20", "20-100", "100-200", "0-200"]
    lo, hi = d.meta["psi_bounds"]["map_mm"]
    q = np.quantile(ch["map_mm"], m.spec["structure"]["psi_quantiles"])
    assert (lo, hi) == pytest.approx(tuple(q), rel=1e-9)
    with pytest.raises(InputError, match="lacks column"):
        get_model("climate_breakpoints").prepare(ch.drop(columns=["map_mm"]))


# ---- model tier: build, finite logp and gradient at the initial point ----------------------
def _finite_logp(model) -> None:
    ip = model.initial_point()
    assert np.isfinite(model.compile_logp()(ip))
    assert np.isfinite(model.compile_dlogp()(ip)).all()


@pytest.fixture(scope="module")
def demo():
    from bayes_soil.harmonize import load_harmonised

    return load_harmonised(None)


@pytest.mark.model
@pytest.mark.parametrize("spec", [{}, {"structure": {"origin": "contrast", "unit_slopes": False}}])
def test_hier_rates_builds_on_demo(demo, spec):
    m = get_model("hier_rates", spec)
    d = m.prepare(demo.layers)
    assert d.coords["vegetation"] == ["forest", "shrub", "grassland"]
    assert len(d.coords["stage"]) == 5
    _finite_logp(m.build(d))


@pytest.mark.model
def test_hier_rates_builds_on_tiny_and_groa_like_data():
    tiny = make_layers(seed=4, n_studies=3, elements=("C",), max_age=12)
    m = get_model("hier_rates", {"data": {"elements": ["C"], "min_rows_per_layer": 3}})
    d = m.prepare(tiny)
    assert len(d.coords["stage"]) <= 3  # no stage beyond the oldest age
    _finite_logp(m.build(d))
    # GROA-like: one vegetation type, C only -> no pooling over vegetation (beta = mu_beta)
    groa = make_layers(seed=5, n_studies=8, vegetation=("forest",), elements=("C",))
    m = get_model("hier_rates")
    model = m.build(m.prepare(groa))
    assert "tau" not in model.named_vars
    _finite_logp(model)


@pytest.mark.model
@pytest.mark.parametrize("breaks", [True, False])
def test_climate_breakpoints_builds_on_demo(demo, breaks):
    m = get_model("climate_breakpoints", {"structure": {"breaks": breaks}})
    model = m.build(m.prepare(demo.changes))
    assert ("psi_std_map_mm" in model.named_vars) is breaks
    _finite_logp(model)


@pytest.mark.model
def test_climate_breakpoints_builds_on_tiny_and_groa_like_data():
    ch = changes_from_layers(
        make_layers(seed=6, n_studies=6, vegetation=("forest",), elements=("C",))
    )
    m = get_model("climate_breakpoints", {"data": {"elements": ["C"], "drivers": ["map_mm"]}})
    _finite_logp(m.build(m.prepare(ch)))
    tiny = make_changes(seed=2, n_studies=5, elements=("N",))
    m = get_model("climate_breakpoints", {"data": {"elements": ["N"], "min_rows_per_layer": 5}})
    _finite_logp(m.build(m.prepare(tiny)))


@pytest.mark.model
def test_hier_rates_prior_predictive_is_on_the_standardised_scale():
    import pymc as pm

    m = get_model("hier_rates", {"data": {"elements": ["C"]}})
    model = m.build(m.prepare(make_layers(seed=7, n_studies=6, elements=("C",))))
    with model:
        prior = pm.sample_prior_predictive(draws=50, random_seed=1)
    y = prior["prior_predictive"]["stock"].values
    assert np.isfinite(y).all()
    assert 0.3 < np.median(np.abs(y)) < 20  # standardised data, weakly informative priors


def test_frames_are_layers_and_changes_shaped():
    from bayes_soil.schema import CHANGE_COLUMNS

    layers = make_layers(seed=0, n_studies=3)
    ch = changes_from_layers(layers)
    assert list(ch.columns) == list(CHANGE_COLUMNS)
    assert isinstance(ch, pd.DataFrame) and (ch["years"] > 0).all()
