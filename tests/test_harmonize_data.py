"""Harmonization against known truth (simulator), real BD data, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bayes_soil.cli import main
from bayes_soil.harmonize import harmonize, load_harmonized
from bayes_soil.harmonize.bulk_density import score_bd_methods
from bayes_soil.schema import CHANGE_COLUMNS, LAYER_COLUMNS
from bayes_soil.simulate import simulate, write_simulation

KEYS = ["study_id", "site_id", "plot_id", "vegetation", "origin", "years", "element", "layer"]


@pytest.fixture(scope="module")
def sim():
    return simulate(seed=5, scale=0.3)


@pytest.fixture(scope="module")
def sim_result(sim):
    return harmonize(sim.observations, score_bd=False)


def _straddling_profiles(obs: pd.DataFrame) -> set:
    """Profile keys with an interval crossing 20 or 100 cm (thickness split != true shares)."""
    t, b = obs["depth_top_cm"], obs["depth_bottom_cm"]
    cross = ((t < 20) & (b > 20)) | ((t < 100) & (b > 100))
    keys = obs.loc[cross, KEYS[:6]]
    return set(map(tuple, keys.astype(str).to_numpy()))


def test_simulated_layer_stocks_equal_truth(sim, sim_result):
    """Layers built from measured BD or reported stocks equal the simulator's true stocks
    (up to the rounding of the reported values); thickness-split straddles only move stock
    between layers, so 0-200 is exact for every such profile."""
    lay = sim_result.layers
    exact = lay[lay["bd_method"].isin(["measured", "reported_stock"]) & ~lay["deep_imputed"]]
    truth = sim.true_layers
    m = exact.merge(truth, on=KEYS, suffixes=("", "_true"), validate="one_to_one")
    assert len(m) > 500
    rel = (m["stock_mg_ha"] / m["stock_mg_ha_true"] - 1).abs()
    strad = _straddling_profiles(sim.observations)
    is_strad = np.array([k in strad for k in map(tuple, m[KEYS[:6]].astype(str).to_numpy())])
    aligned = ~is_strad | (m["layer"] == "0-200").to_numpy()
    assert aligned.sum() > 300
    assert rel[aligned].max() < 0.01
    # layers of straddling schemes are approximate (exponential depth density in the simulator)
    assert rel[~aligned].median() < 0.15


def test_simulated_estimated_bd_and_deep_fill_close_to_truth(sim, sim_result):
    lay = sim_result.layers
    m = lay.merge(sim.true_layers, on=KEYS, suffixes=("", "_true"), validate="one_to_one")
    rel = m["stock_mg_ha"] / m["stock_mg_ha_true"] - 1
    est = m["bd_method"].eq("rf") & ~m["deep_imputed"]
    assert est.sum() > 100
    assert rel[est].abs().median() < 0.08
    deep = m["deep_imputed"] & (m["layer"] == "100-200")
    assert deep.sum() > 20
    assert rel[deep].abs().median() < 0.3
    assert sim_result.rejected.empty
    assert sim_result.synthetic


def test_simulated_rates_in_range(sim, sim_result):
    """Mean change rates per element x layer lie within the truth's range of stage rates."""
    truth = pd.DataFrame(sim.truth["rates"])
    ch = sim_result.changes[~sim_result.changes["deep_imputed"]]
    for (el, layer), g in ch.groupby(["element", "layer"]):
        t = truth[(truth["element"] == el) & (truth["layer"] == layer)]["rate"]
        lo, hi = t.min(), t.max()
        pad = 0.5 * (hi - lo) + 0.05
        assert lo - pad < g["rate_mg_ha_yr"].median() < hi + pad, (el, layer)


@pytest.mark.slow
def test_bd_scores_on_simulated_rows(sim):
    obs = sim.observations.copy()
    obs["soc_g_kg"] = obs["soc_g_kg"].fillna(0.58 * obs["som_g_kg"])
    res = score_bd_methods(obs, groups=obs["study_id"], seed=0)
    assert res["n"] == int(obs["bd_g_cm3"].notna().sum())
    for cv in ("kfold", "group_kfold"):
        assert res[cv]["n_splits"] == 10
        assert res[cv]["rf"]["n"] == res[cv]["ptf"]["n"] == res["n_ptf_applicable"]
        assert 0 < res[cv]["rf"]["rmse"] < 0.2
    # the simulator's BD follows the PTF plus depth and study offsets: the forest learns more
    assert res["kfold"]["rf"]["r2"] > res["kfold"]["ptf"]["r2"]


# --- real data ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sanderman", "dsp4sh"])
def test_bd_methods_on_real_horizons(shared_data, name):
    from harmonize_real_data import dsp4sh_horizons, sanderman_horizons

    load = {"sanderman": sanderman_horizons, "dsp4sh": dsp4sh_horizons}[name]
    df, groups = load(shared_data)
    res = score_bd_methods(df, groups=groups, seed=0)
    print(name, json.dumps({k: res[k] for k in ("n", "kfold", "group_kfold")}))
    assert res["n"] > 1000
    kf, gk = res["kfold"], res["group_kfold"]
    # with rows of the same study in the training folds the forest beats the PTF clearly ...
    assert kf["rf"]["r2"] > kf["ptf"]["r2"] + 0.2
    # ... but across studies much of that advantage is gone: the honest number is lower
    assert gk["rf"]["r2"] < kf["rf"]["r2"] - 0.2
    assert 0.05 < gk["rf"]["rmse"] < 0.5 and 0.05 < gk["ptf"]["rmse"] < 0.5


# --- CLI and load_harmonized ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    write_simulation(simulate(seed=11, scale=0.1), d)
    return d / "observations.csv"


def test_cli_end_to_end(small_csv, tmp_path):
    out = tmp_path / "h"
    assert main(["harmonize", "--data", str(small_csv), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "changes.csv",
        "harmonize_report.json",
        "layers.csv",
        "rejected.csv",
    ]
    rep = json.loads((out / "harmonize_report.json").read_text())
    for key in (
        "rows",
        "steps",
        "bulk_density",
        "shallow_to_deep",
        "changes",
        "depth",
        "settings",
        "synthetic",
        "data_sha256",
    ):
        assert key in rep
    assert rep["synthetic"] is True
    from bayes_soil.io import sha256_file

    # the data identity is that of the harmonized tables; the input file's hash is provenance
    assert rep["data_file_sha256"] == sha256_file(small_csv)
    assert rep["settings"]["bd_method"] == "rf"
    cv = rep["bulk_density"]["cv"]
    assert cv["kfold"]["rf"]["rmse"] > 0 and "group_kfold" in cv
    layers = pd.read_csv(out / "layers.csv")
    changes = pd.read_csv(out / "changes.csv")
    rejected = pd.read_csv(out / "rejected.csv")
    assert list(layers.columns[: len(LAYER_COLUMNS)]) == list(LAYER_COLUMNS)
    assert list(changes.columns[: len(CHANGE_COLUMNS)]) == list(CHANGE_COLUMNS)
    assert list(rejected.columns) == ["obs_id", "line", "reason"]
    n_input = len(pd.read_csv(small_csv))
    used = set(";".join(layers["obs_ids"]).split(";"))
    assert rep["rows"]["input"] == n_input == len(used) + len(rejected)

    # the folder reads back as is; and the file path harmonizes with the same result
    back = load_harmonized(out)
    assert back.synthetic and len(back.layers) == len(layers)
    assert back.layers["deep_imputed"].dtype == bool
    assert back.layers["study_id"].map(type).eq(str).all()
    direct = load_harmonized(small_csv)
    assert direct.data_sha256 == rep["data_sha256"] == back.data_sha256
    pd.testing.assert_series_equal(
        direct.layers["stock_mg_ha"], back.layers["stock_mg_ha"], check_exact=False, rtol=1e-9
    )


@pytest.mark.slow
def test_cli_ptf_and_exclude_flags(small_csv, tmp_path):
    out = tmp_path / "h"
    argv = ["harmonize", "--data", str(small_csv), "--out", str(out), "--bd-method", "ptf"]
    assert main([*argv, "--exclude-deep-imputed"]) == 0
    rep = json.loads((out / "harmonize_report.json").read_text())
    assert rep["settings"] == {**rep["settings"], "bd_method": "ptf", "exclude_deep_imputed": True}
    layers = pd.read_csv(out / "layers.csv")
    assert not layers["deep_imputed"].any()
    assert "ptf" in set(layers["bd_method"]) and "rf" not in set(layers["bd_method"])


def test_cli_bad_input_exit_2_and_no_files(small_csv, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    text = small_csv.read_text().splitlines()
    cells = text[3].split(",")
    cells[text[0].split(",").index("years")] = "abc"
    text[3] = ",".join(cells)
    bad.write_text("\n".join(text) + "\n")
    out = tmp_path / "out"
    assert main(["harmonize", "--data", str(bad), "--out", str(out)]) == 2
    assert "line 4" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
