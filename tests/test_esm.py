"""Equivalent soil mass (harmonize --stocks esm): hand-computed cases, flags, simulator truth."""

from __future__ import annotations

import json

import numpy as np
import obs_frames
import pandas as pd
import pytest

from bayes_soil.harmonize import harmonize
from bayes_soil.harmonize.esm import cumulative_curve, esm_cumulative
from bayes_soil.io import stock_method_of


def make_obs(rows: list[dict]) -> pd.DataFrame:
    return obs_frames.make_obs(rows, source="test")


def rows(years: float, intervals, **kw) -> list[dict]:
    """(top, bottom, bd, soc g/kg) -> observation rows of one profile."""
    return [
        {
            "years": years,
            "depth_top_cm": t,
            "depth_bottom_cm": b,
            "bd_g_cm3": bd,
            "soc_g_kg": soc,
            **kw,
        }
        for t, b, bd, soc in intervals
    ]


def both(obs: pd.DataFrame, **kw):
    fixed = harmonize(obs, score_bd=False, **kw)
    esm = harmonize(obs, score_bd=False, stock_method="esm", **kw)
    return fixed, esm


def stock(layers: pd.DataFrame, years: float, layer: str, col: str = "stock_mg_ha") -> float:
    sel = layers[(layers["years"] == years) & (layers["layer"] == layer)]
    assert len(sel) == 1, sel
    return float(sel[col].iloc[0])


# ---- (a) bulk density changes, SOC content does not: no change on ESM ----------------------
def test_loosened_soil_with_same_content_shows_no_change_on_esm():
    """Control BD 1.2, restored BD 1.0, SOC 10 g/kg everywhere: fixed depth sees a loss of
    1/6 of the stock in every layer; equal soil masses hold equal carbon, so ESM sees none."""
    control = rows(0, [(0, 20, 1.2, 10.0), (20, 100, 1.2, 10.0), (100, 200, 1.2, 10.0)])
    # the restored profile is sampled to 250 cm: its mass at 200 cm (20,000 Mg/ha) is below the
    # control's (24,000), and ESM never extrapolates
    restored = rows(10, [(0, 20, 1.0, 10.0), (20, 100, 1.0, 10.0), (100, 250, 1.0, 10.0)])
    fixed, esm = both(make_obs(control + restored))
    fc = fixed.changes[fixed.changes["element"] == "C"].set_index("layer")
    ec = esm.changes[esm.changes["element"] == "C"].set_index("layer")
    # fixed depth: 10 g/kg x 1.0 g/cm3 x 20 cm / 10 = 20 vs 24 Mg/ha -> -4
    assert fc.loc["0-20", "delta_stock_mg_ha"] == pytest.approx(-4.0)
    assert fc.loc["20-100", "delta_stock_mg_ha"] == pytest.approx(-16.0)
    assert fc.loc["0-200", "delta_stock_mg_ha"] == pytest.approx(-40.0)
    for layer in ("0-20", "20-100", "100-200", "0-200"):
        assert ec.loc[layer, "stock_method"] == "esm"
        assert ec.loc[layer, "delta_stock_mg_ha"] == pytest.approx(0.0, abs=1e-9)
    lay = esm.layers[esm.layers["element"] == "C"]
    assert (lay["esm_status"] == "ok").all()
    # the restored 0-20 cm ESM stock is the carbon in the control's 2,400 Mg/ha of topsoil
    assert stock(lay, 10, "0-20") == pytest.approx(24.0)
    assert stock(lay, 10, "0-20", "fixed_stock_mg_ha") == pytest.approx(20.0)
    assert stock(lay, 10, "0-20", "esm_ref_mass_mg_ha") == pytest.approx(2400.0)
    assert stock(lay, 10, "100-200", "esm_ref_mass_mg_ha") == pytest.approx(24000.0)


# ---- (b) a hand-computed two-layer example ---------------------------------------------------
def test_pchip_values_computed_by_hand():
    """Points (0,0), (1000,10), (4000,25). Fritsch-Carlson slopes: d0 = 0.01, d1 = 0.005;
    interior m1 = 12000 / (7000/0.01 + 5000/0.005) = 0.00705882; ends m0 = (5000*0.01 -
    1000*0.005)/4000 = 0.01125, m2 = (7000*0.005 - 3000*0.01)/4000 = 0.00125. At M = 2500
    (t = 1/2): 0.5*10 + 0.125*3000*m1 + 0.5*25 - 0.125*3000*m2 = 19.6783088; at M = 3500
    (t = 5/6): 23.9450572."""
    curve = cumulative_curve(
        np.array([0.0, 10.0]),
        np.array([10.0, 30.0]),
        np.array([1000.0, 3000.0]),
        np.array([10.0, 15.0]),
    )
    assert curve["mass"].tolist() == [0.0, 1000.0, 4000.0]
    e = esm_cumulative(curve, np.array([0.0, 1000.0, 2500.0, 3500.0, 4000.0, 4000.5]))
    assert e[:5] == pytest.approx([0.0, 10.0, 19.6783088, 23.9450572, 25.0], abs=1e-6)
    assert np.isnan(e[5])  # beyond the deepest sampled mass: no extrapolation


def test_two_layer_profile_against_hand_values():
    """Layers 0-20 and 20-30 cm. Control: 0-20 cm at BD 1.25 (2,500 Mg/ha, 20 Mg C/ha),
    20-30 cm at BD 1.0 (1,000 Mg/ha, 5 Mg C/ha): reference masses 2,500 and 3,500. Restored:
    0-10 cm at BD 1.0 (1,000 Mg/ha, 10 Mg C/ha), 10-30 cm at BD 1.5 (3,000 Mg/ha, 15 Mg C/ha).
    Fixed depth splits 10-30 by thickness: 17.5 and 7.5. ESM: E(2500) = 19.6783088 and
    E(3500) - E(2500) = 4.2667484 (values of the test above)."""
    control = rows(0, [(0, 20, 1.25, 8.0), (20, 30, 1.0, 5.0)])
    restored = rows(10, [(0, 10, 1.0, 10.0), (10, 30, 1.5, 5.0)])
    bounds = ((0.0, 20.0), (20.0, 30.0))
    fixed, esm = both(make_obs(control + restored), layer_bounds=bounds)
    fl, el = fixed.layers, esm.layers
    assert stock(fl, 10, "0-20") == pytest.approx(17.5)
    assert stock(fl, 10, "20-30") == pytest.approx(7.5)
    assert stock(el, 10, "0-20") == pytest.approx(19.6783088, abs=1e-6)
    assert stock(el, 10, "20-30") == pytest.approx(23.9450572 - 19.6783088, abs=1e-6)
    assert stock(el, 10, "0-30") == pytest.approx(23.9450572, abs=1e-6)
    # the control is its own reference: its boundaries are data points, ESM = fixed depth
    assert stock(el, 0, "0-20") == pytest.approx(20.0)
    assert stock(el, 0, "20-30") == pytest.approx(5.0)
    ch = esm.changes.set_index("layer")
    assert ch.loc["0-20", "delta_stock_mg_ha"] == pytest.approx(19.6783088 - 20.0, abs=1e-6)
    assert (ch["stock_method"] == "esm").all()
    assert esm.stock_method == "esm" and fixed.stock_method == "fixed"
    assert esm.report["settings"]["stock_method"] == "esm"
    assert esm.report["stock_method"] == "esm" and fixed.report["stock_method"] == "fixed"
    assert "esm" not in fixed.report and esm.report["esm"]["layer_rows_esm"] == 6


# ---- (c) rows ESM cannot serve stay on fixed depth, flagged ---------------------------------
def test_rows_esm_cannot_serve_keep_fixed_depth_with_a_reason():
    layers3 = [(0, 20), (20, 100), (100, 200)]
    control = rows(0, [(t, b, 1.2, 10.0) for t, b in layers3])
    good = rows(10, [(0, 20, 1.1, 11.0), (20, 100, 1.2, 10.0), (100, 250, 1.3, 9.0)])
    # reported stocks without bulk density: no soil mass, so no ESM
    no_bd = [
        {
            "years": 12,
            "plot_id": "nobd",
            "depth_top_cm": t,
            "depth_bottom_cm": b,
            "soc_stock_mg_ha": 10.0 * (b - t) / 10,
        }
        for t, b in layers3
    ]
    # sampled only to 200 cm at a lower BD than the control's: its mass falls short at depth
    shallow = rows(15, [(0, 20, 1.2, 10.0), (20, 100, 1.2, 10.0), (100, 200, 1.0, 10.0)])
    # a chronosequence of another site without a year-0 control
    orphan = rows(8, [(t, b, 1.2, 10.0) for t, b in layers3], site_id="B")
    obs = make_obs(control + good + no_bd + shallow + orphan)
    fixed, esm = both(obs)

    # the same rows on both methods; the fixed-depth stock is kept beside the ESM one
    key = ["profile_id", "element", "layer"]
    m = fixed.layers.merge(esm.layers, on=key, suffixes=("_f", "_e"), validate="one_to_one")
    assert len(m) == len(fixed.layers) == len(esm.layers) == 5 * 4
    assert (m["stock_mg_ha_f"] == m["fixed_stock_mg_ha"]).all()
    assert len(esm.rejected) == len(fixed.rejected) == 0

    lay = esm.layers.set_index(["years", "layer"])
    status, method = lay["esm_status"], lay["stock_method"]
    assert (status.loc[10] == "ok").all() and (status.loc[0] == "ok").all()
    assert status.loc[(12, "0-20")].startswith("bulk density missing")
    assert status.loc[(8, "0-20")].startswith("no year-0 control")
    assert status.loc[(15, "0-20")] == "ok" and status.loc[(15, "20-100")] == "ok"
    assert status.loc[(15, "100-200")].startswith("not sampled deep enough")
    assert status.loc[(15, "0-200")].startswith("layer 100-200 on fixed depth")
    for years in (12, 8):
        assert (method.loc[years] == "fixed").all()
        np.testing.assert_array_equal(
            lay.loc[years, "stock_mg_ha"].to_numpy(), lay.loc[years, "fixed_stock_mg_ha"].to_numpy()
        )
    assert method.loc[(15, "100-200")] == "fixed" and method.loc[(15, "0-20")] == "esm"

    rep = esm.report["esm"]
    assert rep["layer_rows_esm"] == int((esm.layers["stock_method"] == "esm").sum()) == 10
    assert rep["layer_rows_fixed_fallback"] == 10
    assert rep["fixed_fallback_by_reason"] == {
        "bd_missing": 3,
        "no_control": 3,
        "too_shallow": 1,
        "layer_on_fixed_depth": 3,
    }
    # a change is ESM only when the treated row and its baseline are; else both fixed depth
    ch = esm.changes.set_index(["years", "layer"])
    assert ch.loc[(15, "100-200"), "stock_method"] == "fixed"
    assert ch.loc[(15, "100-200"), "delta_stock_mg_ha"] == pytest.approx(
        10.0 * 1.0 * 100 / 10 - 120
    )
    assert ch.loc[(15, "0-20"), "stock_method"] == "esm"
    assert esm.report["changes"]["rows_esm"] == int((esm.changes["stock_method"] == "esm").sum())


def test_esm_folder_round_trip_and_cli(tmp_path, capsys):
    from bayes_soil.cli import main
    from bayes_soil.harmonize import load_harmonized

    obs = make_obs(
        rows(0, [(0, 20, 1.2, 10.0), (20, 100, 1.2, 10.0), (100, 200, 1.2, 10.0)])
        + rows(10, [(0, 20, 1.0, 10.0), (20, 100, 1.0, 10.0), (100, 250, 1.0, 10.0)])
    )
    src = tmp_path / "obs.csv"
    obs.drop(columns=["line"]).to_csv(src, index=False)
    out = tmp_path / "h"
    assert main(["harmonize", "--data", str(src), "--out", str(out), "--stocks", "esm"]) == 0
    assert "stock method: esm" in capsys.readouterr().out
    rep = json.loads((out / "harmonize_report.json").read_text())
    assert rep["stock_method"] == rep["settings"]["stock_method"] == "esm"
    back = load_harmonized(out)
    assert back.stock_method == "esm" and stock_method_of(back.layers) == "esm"
    assert back.layers["stock_method"].map(type).eq(str).all()
    direct = load_harmonized(src, stock_method="esm")
    assert direct.data_sha256 == back.data_sha256 == rep["data_sha256"]
    assert direct.data_sha256 != load_harmonized(src).data_sha256


# ---- (d) the simulator's truth ----------------------------------------------------------
@pytest.fixture(scope="module")
def sim_pair():
    from bayes_soil.simulate import simulate

    sim = simulate(seed=5, scale=0.1)
    fixed = harmonize(sim.observations, score_bd=False)
    esm = harmonize(sim.observations, score_bd=False, stock_method="esm")
    return sim, fixed, esm


def test_simulator_fixed_outputs_unchanged_and_esm_close_to_truth(sim_pair):
    """The simulator draws bulk density around the PTF with no systematic change after
    revegetation, so equal soil masses hold about the true fixed-depth stock: ESM moves the
    measured-BD totals by noise only. Fixed-depth stocks are carried unchanged."""
    sim, fixed, esm = sim_pair
    key = ["profile_id", "element", "layer"]
    m = fixed.layers.merge(esm.layers, on=key, suffixes=("_f", "_e"), validate="one_to_one")
    assert len(m) == len(fixed.layers) == len(esm.layers)
    np.testing.assert_array_equal(m["stock_mg_ha_f"], m["fixed_stock_mg_ha"])
    ok = m["esm_status"] == "ok"
    assert ok.sum() > 100 and (~ok).sum() > 0
    assert (m.loc[~ok, "stock_mg_ha_e"] == m.loc[~ok, "stock_mg_ha_f"]).all()
    assert (m.loc[ok, "stock_method"] == "esm").all()

    keys = ["study_id", "site_id", "plot_id", "vegetation", "origin", "years", "element", "layer"]
    lay = esm.layers.assign(plot_id=esm.layers["plot_id"].astype(str))
    tot = lay[(lay["layer"] == "0-200") & (lay["stock_method"] == "esm")]
    tot = tot[tot["bd_method"] == "measured"]
    t = tot.merge(sim.true_layers, on=keys, suffixes=("", "_true"), validate="one_to_one")
    assert len(t) > 20
    rel = t["stock_mg_ha"] / t["stock_mg_ha_true"] - 1
    assert abs(rel.median()) < 0.03 and rel.abs().quantile(0.9) < 0.1
    # ESM totals are the sums of their ESM layers (the cumulative curve telescopes)
    per = lay[lay["layer"] != "0-200"].groupby(["profile_id", "element"])["stock_mg_ha"].sum()
    np.testing.assert_allclose(
        tot.set_index(["profile_id", "element"])["stock_mg_ha"],
        per.reindex(tot.set_index(["profile_id", "element"]).index),
        rtol=1e-12,
    )


def test_report_header_and_provenance_state_the_stock_method():
    from report_fakes import fake_report_inputs

    from bayes_soil.report.sections_provenance import provenance_section
    from bayes_soil.report.sections_summary import header_html

    inp = fake_report_inputs()
    assert "stocks: <span id='stock-method'>fixed depth</span>" in header_html(inp)
    lay = inp.harmonized.layers
    inp.harmonized.layers = lay.assign(
        stock_method=np.where(np.arange(len(lay)) % 4 == 0, "fixed", "esm"),
        esm_status="ok",
    )
    n_esm = int((inp.harmonized.layers["stock_method"] == "esm").sum())
    text = f"equivalent soil mass (ESM; {n_esm} of {len(lay)} layer rows"
    assert text in header_html(inp)
    assert text in provenance_section(inp)


def test_compare_names_the_stock_methods_of_fits_from_different_data():
    from report_fakes import fake_breakpoints_fit, fake_freq_tables, fake_rates_fit

    from bayes_soil.compare import compare
    from bayes_soil.errors import InputError

    fixed_fit = fake_rates_fit(synthetic=True)
    esm_fit = fake_breakpoints_fit(synthetic=True, verdict="pass")
    esm_fit.attrs["data_sha256"] = "cd" * 32
    esm_fit.attrs["stock_method"] = "esm"
    with pytest.raises(InputError, match=r"differ in stock method \(.*=fixed, .*=esm\)"):
        compare([fixed_fit, esm_fit], fake_freq_tables())
    # an ESM fit whose fixed-depth twin is the other fit's data: named as such
    esm_fit.attrs["fixed_data_sha256"] = fixed_fit.attrs["data_sha256"]
    with pytest.raises(InputError, match="an ESM fit of the same observations"):
        compare([fixed_fit, esm_fit], fake_freq_tables())
    esm_fit.attrs["data_sha256"] = fixed_fit.attrs["data_sha256"]
    fixed_fit.attrs["stock_method"] = "esm"
    result = compare([fixed_fit, esm_fit], fake_freq_tables())
    assert [i["stock_method"] for i in result.rules()["fits"]] == ["esm", "esm"]


def test_stock_method_of_tables():
    assert stock_method_of(None) == "fixed"
    assert stock_method_of(pd.DataFrame({"stock_mg_ha": [1.0]})) == "fixed"
    assert stock_method_of(pd.DataFrame({"stock_method": ["fixed"]})) == "esm"


def test_freq_provenance_records_the_stock_method(tmp_path):
    from types import SimpleNamespace

    from bayes_soil.frequentist import PROVENANCE_FILE, write_freq_tables
    from bayes_soil.io import AtomicOutputs

    for method in ("fixed", "esm"):
        h = SimpleNamespace(data_sha256="ab" * 32, synthetic=False, stock_method=method)
        with AtomicOutputs(tmp_path / method) as out:
            write_freq_tables(out, {"rates": pd.DataFrame({"k": [1.0]})}, h)
        rec = json.loads((tmp_path / method / PROVENANCE_FILE).read_text())
        assert rec["stock_method"] == method


def test_fixed_depth_twin_is_the_fixed_harmonization(sim_pair):
    """An ESM result carries its fixed-depth twin exactly: same identity, same freq answers."""
    from bayes_soil.frequentist import run_frequentist
    from bayes_soil.frequentist.stock_shift import esm_vs_fixed, rate_shifts
    from bayes_soil.harmonize.esm import fixed_depth_twin
    from bayes_soil.io import FIXED_TWIN_ATTR
    from bayes_soil.models import get_model

    _, fixed, esm = sim_pair
    assert esm.report["esm"]["fixed_data_sha256"] == fixed.data_sha256 != esm.data_sha256
    # a model given the ESM result takes a table that still names the twin (fit attributes)
    table = get_model("hier_rates").resolve_data(esm)[0]
    assert table.attrs[FIXED_TWIN_ATTR] == fixed.data_sha256
    assert FIXED_TWIN_ATTR not in fixed.layers.attrs
    twin_layers, twin_changes = fixed_depth_twin(esm.layers)
    pd.testing.assert_frame_equal(twin_layers, fixed.layers)
    pd.testing.assert_frame_equal(twin_changes, fixed.changes)
    shift = esm_vs_fixed(esm.layers, esm.changes)
    f, e = run_frequentist(fixed.layers, fixed.changes), run_frequentist(esm.layers, esm.changes)
    pd.testing.assert_frame_equal(shift["rates"], rate_shifts(f.rates, e.rates))
    assert len(shift["rates"]) > 10 and (shift["rates"]["shift"] != 0).any()
    assert set(shift["breakpoints"]["driver"]) <= {"map_mm", "mat_c"}


def test_report_harmonization_section_shows_the_esm_shift():
    from report_fakes import fake_report_inputs

    from bayes_soil.report.sections_data import harmonization_section

    inp = fake_report_inputs()
    assert "Stocks on fixed depth" in harmonization_section(inp)
    inp.harmonized.report["esm"] = {
        "method": "cumulative-mass ESM",
        "layer_rows_esm": 7,
        "layer_rows_fixed_fallback": 3,
        "fixed_fallback_by_reason": {"no_control": 3},
    }
    rates = pd.DataFrame(
        {
            "element": ["C", "C"],
            "layer": ["0-20", "0-20"],
            "stage": ["0-5", "6-10"],
            "k_fixed": [0.1, 0.2],
            "k_esm": [0.12, -0.1],
            "shift": [0.02, -0.3],
            "shift_in_se": [0.5, -1.5],
            "p_fixed": [0.01, 0.2],
            "p_esm": [0.2, 0.3],
            "sign_flip": [False, True],
            "sig_change": [True, False],
        }
    )
    inp.stock_shift = {"rates": rates, "breakpoints": pd.DataFrame()}
    html = harmonization_section(inp)
    assert "7 layer rows on ESM, 3 kept on fixed depth" in html
    assert "median shift from fixed depth to ESM was 1.00 SE" in html
    assert "1 sign flip(s), 1 change(s) of significance" in html


@pytest.mark.slow  # draws the paper's figures (tens of seconds on 2 shared cores)
def test_freq_figures_say_esm(sim_pair, tmp_path):
    from bayes_soil.frequentist import run_frequentist
    from bayes_soil.report.freq_figures import ESM_TAG, write_freq_figures

    _, _, esm = sim_pair
    result = run_frequentist(esm.layers, esm.changes)
    names = write_freq_figures(
        result, esm.layers, esm.changes, tmp_path, synthetic=True, stock_method="esm"
    )
    svgs = [n for n in names if n.endswith(".svg")]
    assert len(svgs) >= 5
    for name in svgs:
        text = (tmp_path / name).read_text()
        assert ESM_TAG.strip(" ()") in text and "SYNTHETIC" in text, name


def test_compare_stock_shift_puts_a_fixed_and_an_esm_fit_side_by_side(tmp_path, capsys):
    """`compare FIXED.nc ESM.nc --stock-shift`: the ESM posterior minus the fixed one, per cell,
    only for a pair whose ESM fit's fixed-depth twin is the fixed fit's data."""
    from report_fakes import fake_rates_fit

    from bayes_soil.cli import main
    from bayes_soil.compare import posterior_stock_shift
    from bayes_soil.errors import InputError
    from bayes_soil.fits import save_fit

    fixed = fake_rates_fit(seed=1)
    esm = fake_rates_fit(seed=2)
    post = esm["posterior"].to_dataset()
    esm["posterior"] = post.assign(rate=post["rate"] + 0.5, rate_mean=post["rate_mean"] + 0.5)
    esm.attrs.update(stock_method="esm", data_sha256="cd" * 32)
    with pytest.raises(InputError, match="fixed-depth twin"):
        posterior_stock_shift([fixed, esm])
    esm.attrs["fixed_data_sha256"] = fixed.attrs["data_sha256"]
    table = posterior_stock_shift([esm, fixed])  # either order
    np.testing.assert_allclose(table["shift"], table["mean_esm"] - table["mean_fixed"])
    assert table["shift"].between(0.45, 0.55).all()  # the +0.5 put into every ESM draw
    assert (table["shift_in_sd"] > 1).all() and table["interval"].eq("94% HDI").all()
    with pytest.raises(InputError, match="different models"):
        posterior_stock_shift([fixed, _esm_breaks(esm)])
    paths = [save_fit(dt, tmp_path / f"{n}.nc") for n, dt in (("fixed", fixed), ("esm", esm))]
    out = tmp_path / "shift"
    assert main(["compare", *map(str, paths), "--stock-shift", "--out", str(out)]) == 0
    written = pd.read_csv(out / "stock_shift_posterior.csv")
    assert len(written) == len(table)
    assert "sign of the mean flips" in capsys.readouterr().out
    assert main(["compare", str(paths[0]), "--out", str(out)]) == 2  # no --freq, no pair


def _esm_breaks(esm_rates):
    from report_fakes import fake_breakpoints_fit

    dt = fake_breakpoints_fit()
    dt.attrs.update(
        stock_method="esm",
        data_sha256=esm_rates.attrs["data_sha256"],
        fixed_data_sha256=esm_rates.attrs["fixed_data_sha256"],
    )
    return dt


def test_stock_shift_of_turning_points_names_changed_decisions():
    from report_fakes import fake_breakpoints_fit

    from bayes_soil.compare import posterior_stock_shift

    fixed, esm = fake_breakpoints_fit(), fake_breakpoints_fit()
    esm.attrs.update(
        stock_method="esm", data_sha256="cd" * 32, fixed_data_sha256=fixed.attrs["data_sha256"]
    )
    post = esm["posterior"].to_dataset()
    esm["posterior"] = post.assign(psi=post["psi"] + 20.0)
    table = posterior_stock_shift([fixed, esm])
    both = table["psi_mean_fixed"].notna() & table["psi_mean_esm"].notna()
    assert both.any()
    np.testing.assert_allclose(table.loc[both, "psi_shift"], 20.0, atol=1e-6)
    assert not table["decision_changed"].any()  # P(break) untouched
    assert table["interval"].str.endswith("given a turning point").all()
