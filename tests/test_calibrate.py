"""calibrate: scoring on fake posteriors with known coverage, resume, the CLI; slow: Dask run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from bayes_soil import calibrate as cal
from bayes_soil.cli import main
from bayes_soil.errors import InputError
from bayes_soil.io import DEMO_TRUTH
from bayes_soil.schema import LAYERS, STAGES, TOTAL_LAYER, VEGETATION

TRUTH = json.loads(DEMO_TRUTH.read_text())
DIAG = {
    "max_rhat": 1.002,
    "min_ess_bulk": 900.0,
    "divergences": 0,
    "verdict": "pass",
    "worst_rhat_var": "sd_site",
    "worst_ess_var": "sigma",
}


def _expected_coverage(level: float, shift: float) -> float:
    """P(truth in the central interval of N(centre, 1)) when centre ~ N(truth + shift, 1):
    Phi(z - shift) - Phi(-z - shift) (z = the level's normal quantile)."""
    z = stats.norm.ppf((1 + level) / 2)
    return float(stats.norm.cdf(z - shift) - stats.norm.cdf(-z - shift))


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.5])
def test_score_samples_coverage_matches_theory(shift):
    rng = np.random.default_rng(1)
    n_cells, n_draws = 2000, 1000
    truth = rng.normal(0, 3, n_cells)
    # a calibrated posterior N(centre, 1) with centre ~ N(truth, 1), shifted by `shift`
    centre = truth + shift + rng.standard_normal(n_cells)
    draws = centre + rng.standard_normal((n_draws, n_cells))
    s = cal.score_samples(draws, truth)
    for level, col in ((0.5, "cover50"), (0.9, "cover90")):
        expected = _expected_coverage(level, shift)
        sd = np.sqrt(expected * (1 - expected) / n_cells)
        assert abs(s[col].mean() - expected) < 4 * sd + 0.01, (level, s[col].mean(), expected)
    assert abs(s["bias"].mean() - shift) < 0.1  # sd of the mean: 1 / sqrt(2000)
    z90 = stats.norm.ppf(0.95)
    assert np.allclose(s["width90"].mean(), 2 * z90, atol=0.02)
    # PIT: Phi(truth - centre), truth - centre ~ N(-shift, 1): mean Phi(-shift / sqrt(2))
    assert abs(s["rank"].mean() - stats.norm.cdf(-shift / np.sqrt(2))) < 0.03


def test_score_samples_nan_draws_and_truth():
    draws = np.array(
        [
            [1.0, np.nan, np.nan, 5.0],
            [2.0, np.nan, 10.0, 6.0],
            [3.0, np.nan, 11.0, 7.0],
            [4.0, np.nan, 12.0, 8.0],
        ]
    )
    truth = np.array([2.5, 3.0, 11.5, np.nan])
    s = cal.score_samples(draws, truth)
    assert s["n_draws"].tolist() == [4, 0, 3, 4]
    # cell 0: central 90% of 1..4 covers 2.5; cell 1: a true value but no draw -> not covered
    assert s["cover90"][0] == 1.0 and s["cover90"][1] == 0.0
    # cell 2: interval of the non-NaN draws (10..12) covers 11.5; cell 3: no truth -> NaN
    assert s["cover90"][2] == 1.0 and np.isnan(s["cover90"][3])
    assert s["rank"][0] == 0.5 and np.isnan(s["rank"][3])
    assert np.isnan(s["bias"][1]) and s["post_mean"][2] == 11.0


def _rates_truth_array() -> xr.DataArray:
    df = pd.DataFrame(TRUTH["rates"])
    df = df[(df["element"] == "C") & (df["vegetation"] != "all")]
    da = df.set_index(["element", "vegetation", "stage", "layer"])["rate"].to_xarray()
    return da.reindex(
        element=["C"], vegetation=list(VEGETATION), stage=list(STAGES), layer=[*LAYERS, TOTAL_LAYER]
    )


def _fake_hier_fit(shift: float = 0.0, seed: int = 0, n_draws: int = 400) -> xr.DataTree:
    rng = np.random.default_rng(seed)
    truth = _rates_truth_array()
    noise = rng.standard_normal((2, n_draws, *truth.shape))
    rate = xr.DataArray(
        truth.values[None, None] + shift + noise,
        dims=("chain", "draw", *truth.dims),
        coords={k: truth[k].values for k in truth.dims},
    )
    post = xr.Dataset({"rate": rate, "rate_mean": rate.mean("vegetation")})
    dt = xr.DataTree.from_dict({"posterior": post})
    dt.attrs.update(diagnostics=json.dumps(DIAG), n_obs=1234)
    return dt


def test_score_fit_hier_rates_rows_and_coverage():
    rows = cal.score_fit(_fake_hier_fit(shift=0.0), TRUTH, "hier_rates")
    rate = rows[rows["quantity"] == "rate"]
    assert len(rate) == 3 * 5 * 4  # vegetation x stage x layer (0-200 included)
    assert set(rate["layer"]) == {*LAYERS, TOTAL_LAYER}
    assert len(rows[rows["quantity"] == "rate_mean"]) == 5 * 4
    assert set(rows.loc[rows["quantity"] == "rate_mean", "vegetation"]) == {"all"}
    # draws N(truth, 1): every truth lies at the posterior median -> always covered, rank ~ 0.5
    assert rate["cover50"].eq(1.0).all() and rate["cover90"].eq(1.0).all()
    assert rate["rank"].between(0.4, 0.6).all()
    assert rows["verdict"].eq("pass").all() and rows["n_rows"].eq(1234).all()
    assert rate["rhat"].lt(1.05).all() and rate["ess_bulk"].gt(100).all()
    # a shift of 3 sd puts every truth outside the 90% interval
    far = cal.score_fit(_fake_hier_fit(shift=3.0), TRUTH, "hier_rates")
    assert far["cover90"].eq(0.0).all() and np.allclose(far["bias"], 3.0, atol=0.3)


def _fake_climate_fit(p_break: float, seed: int = 0, n_draws: int = 400) -> xr.DataTree:
    """psi NaN in the draws without a break (share 1 - p_break), psi ~ N(truth, 20 mm) else."""
    rng = np.random.default_rng(seed)
    tp = pd.DataFrame(TRUTH["turning_points"])
    tp = tp[tp["element"] == "C"]
    drivers, layers = ["map_mm", "mat_c"], [*LAYERS, TOTAL_LAYER]
    shape = (2, n_draws, 1, 2, 4)
    truth_psi = np.full(shape[2:], 500.0)
    for r in tp.itertuples():
        if r.psi is not None and not pd.isna(r.psi):
            truth_psi[0, drivers.index(r.driver), layers.index(r.layer)] = r.psi
    psi = truth_psi[None, None] + rng.normal(0, 20, shape)
    brk = rng.random(shape) < p_break
    psi = np.where(brk, psi, np.nan)
    coords = {"element": ["C"], "driver": drivers, "layer": layers}
    dims = ("chain", "draw", "element", "driver", "layer")
    post = xr.Dataset(
        {
            "psi": (dims, psi),
            "p_break": (dims, brk.astype(float)),
            "k1": (dims, rng.normal(0, 0.001, shape)),
            "k2": (dims, rng.normal(0, 0.001, shape)),
        },
        coords=coords,
    )
    dt = xr.DataTree.from_dict({"posterior": post})
    dt.attrs.update(diagnostics=json.dumps({**DIAG, "verdict": "fail"}), n_obs=99)
    return dt


def test_score_fit_climate_psi_given_break_and_p_break():
    rows = cal.score_fit(_fake_climate_fit(p_break=0.3), TRUTH, "climate_breakpoints")
    psi = rows[rows["quantity"] == "psi"]
    assert len(psi) == 8  # driver x layer for C
    assert np.allclose(psi["p_break"], 0.3, atol=0.05)
    true_break = psi[psi["has_break"].astype(bool)]
    assert set(true_break["driver"]) == {"map_mm"}
    # interval of the non-NaN draws covers the truth; NaN draws make R-hat undefined
    assert true_break["cover90"].eq(1.0).all() and true_break["rhat"].isna().all()
    assert true_break["n_draws"].between(0.2 * 800, 0.4 * 800).all()
    # no true break (MAT): no psi truth -> coverage NaN, but P(break) is scored
    assert psi.loc[~psi["has_break"].astype(bool), "cover90"].isna().all()
    assert {"k1", "k2"} <= set(rows["quantity"])
    summary = cal.summarize(rows.assign(dataset=0, fit_s=1.0))
    s_psi = summary.set_index("quantity").loc["psi"]
    assert s_psi["coverage90"] == 1.0 and s_psi["false_break_rate"] == 0.0
    # the 0-200 MAP truth is approximate: flagged and left out of the headline numbers
    assert psi.loc[(psi["driver"] == "map_mm") & (psi["layer"] == "0-200"), "approximate"].all()
    assert s_psi["n_cells"] == 3
    # P(break) = 0.8 everywhere: every no-break cell is a false break
    rows2 = cal.score_fit(_fake_climate_fit(p_break=0.8), TRUTH, "climate_breakpoints")
    s2 = cal.summarize(rows2.assign(dataset=0, fit_s=1.0)).set_index("quantity").loc["psi"]
    assert s2["false_break_rate"] == 1.0


def test_binomial_interval_and_summary_markdown():
    lo, hi = cal.binomial_interval(45, 50)
    assert lo < 0.9 < hi and 0.78 < lo < 0.80 and 0.95 < hi < 0.97
    assert all(np.isnan(cal.binomial_interval(0, 0)))
    rows = cal.score_fit(_fake_hier_fit(), TRUTH, "hier_rates").assign(dataset=0, fit_s=2.0)
    md = cal.summary_markdown(cal.summarize(rows))
    assert "SYNTHETIC" in md and "90%" in md and "Wilson" in md
    small, md2 = cal.report_section(rows.assign(model="hier_rates", variant="base"), "hier_rates")
    assert list(small["quantity"]) == ["rate", "rate_mean"] and "SYNTHETIC" in md2
    assert cal.report_section(rows.assign(model="hier_rates", variant="base"), "other") is None


# ---- resume: fake simulation and fit, counting the fits --------------------------------------
@pytest.fixture
def fake_pipeline(monkeypatch):
    calls = []

    def fake_sim(config, seed, workdir):
        return SimpleNamespace(layers=pd.DataFrame({"x": [seed]}), changes=None), TRUTH

    def fake_fit(model, table, config, seed):
        calls.append(seed)
        return _fake_hier_fit(shift=0.3, seed=seed, n_draws=100)

    monkeypatch.setattr(cal, "simulate_and_harmonize", fake_sim)
    monkeypatch.setattr(cal, "fit_model", fake_fit)
    return calls


def test_resume_skips_finished_datasets(tmp_path, fake_pipeline):
    cfg = cal.CalibrationConfig(model="hier_rates", datasets=2, seed_start=5)
    first = cal.run_calibration(cfg, tmp_path, figures=False)
    assert fake_pipeline == [5, 6] and first.ran == [0, 1]
    f0 = cal.result_path(tmp_path, cfg, 0)
    stamp = f0.stat().st_mtime_ns
    # a longer run over the same folder fits only the new dataset
    cfg3 = cal.CalibrationConfig(model="hier_rates", datasets=3, seed_start=5)
    res = cal.run_calibration(cfg3, tmp_path, figures=False)
    assert fake_pipeline == [5, 6, 7] and res.skipped == [0, 1] and res.ran == [2]
    assert f0.stat().st_mtime_ns == stamp
    assert sorted(res.table["dataset"].unique()) == [0, 1, 2]
    assert len(res.table) == 3 * 80
    # an interrupted run: one result file missing -> only that dataset is fitted again
    cal.result_path(tmp_path, cfg3, 1).unlink()
    again = cal.run_calibration(cfg3, tmp_path, figures=False)
    assert fake_pipeline[-1] == 6 and again.ran == [1]
    # same seeds -> same table (timing columns aside)
    drop = list(cal.TIMING_COLUMNS)
    pd.testing.assert_frame_equal(
        again.table.drop(columns=drop), res.table.drop(columns=drop), check_dtype=False
    )
    assert not list(tmp_path.rglob("*.partial"))
    for name in ("calibration.csv", "calibration.parquet", "summary.json", "summary.md"):
        assert (tmp_path / name).exists()
    # results made with other settings are refused, not mixed in
    other = cal.CalibrationConfig(model="hier_rates", datasets=3, seed_start=5, scale=0.3)
    with pytest.raises(InputError, match="other calibration settings"):
        cal.run_calibration(other, tmp_path, figures=False)


def test_results_of_other_model_code_or_defaults_are_not_resumed(
    tmp_path, fake_pipeline, monkeypatch
):
    """A model changed since a folder was written (its code or its spec defaults) is refused."""
    cfg = cal.CalibrationConfig(model="hier_rates", datasets=1, seed_start=5)
    cal.run_calibration(cfg, tmp_path, figures=False)
    assert cal.finished_datasets(tmp_path, cfg) == [0]
    monkeypatch.setattr(cal, "modelling_code_hash", lambda: "edited model")
    with pytest.raises(InputError, match="other calibration settings"):
        cal.finished_datasets(tmp_path, cfg)
    monkeypatch.undo()
    spec = cal.get_model("hier_rates").spec
    changed = {**spec, "priors": {**spec["priors"], "sigma": 2.0}}
    monkeypatch.setattr(cal, "get_model", lambda name, s=None: SimpleNamespace(spec=changed))
    with pytest.raises(InputError, match="other calibration settings"):
        cal.finished_datasets(tmp_path, cfg)


def test_failed_fit_is_reported_and_retried(tmp_path, fake_pipeline, monkeypatch):
    def broken(model, table, config, seed):
        raise RuntimeError("sampler exploded")

    cfg = cal.CalibrationConfig(model="hier_rates", datasets=1, seed_start=9)
    monkeypatch.setattr(cal, "fit_model", broken)
    res = cal.run_calibration(cfg, tmp_path, figures=False)
    assert list(res.failed) == [0] and "sampler exploded" in res.failed[0]
    assert (tmp_path / "errors" / "dataset-0000.txt").exists()
    assert not cal.result_path(tmp_path, cfg, 0).exists()


def test_config_refuses_demo_seed_and_bad_values():
    with pytest.raises(InputError, match="demo"):
        cal.CalibrationConfig(model="hier_rates", seed_start=cal.demo_seed()).validate()
    with pytest.raises(InputError):
        cal.CalibrationConfig(model="hier_rates", datasets=0).validate()
    spec = cal.CalibrationConfig(model="climate_breakpoints", driver="both").spec_overrides()
    assert spec["data"] == {"elements": ["C"], "drivers": ["map_mm", "mat_c"]}


def test_cli_calibrate_in_process_writes_table_summary_figures(tmp_path, fake_pipeline, capsys):
    out = tmp_path / "calib"
    argv = ["calibrate", "--model", "hier_rates", "--datasets", "2", "--workers", "0"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "90% coverage" in printed
    table = pd.read_parquet(out / "calibration.parquet")
    assert len(table) == 2 * 80 and table["seed"].tolist()[0] == 1
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert figs == ["coverage_by_layer_stage.png", "rank_ecdf.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label"].startswith("SYNTHETIC") and summary["summary"][0]["n_datasets"] == 2
    loaded = cal.load_calibration(out)
    assert loaded is not None and loaded["spec_sha256"].nunique() == 1
    assert main([*argv, "--out", str(out), "--quiet"]) == 0  # all reused
    assert fake_pipeline == [1, 2]


# ---- slow: real fits on a LocalCluster ---------------------------------------------------------
@pytest.mark.slow
def test_two_datasets_on_a_local_cluster(tmp_path):
    from distributed import Client, LocalCluster

    cfg = cal.CalibrationConfig(
        model="hier_rates", datasets=2, seed_start=101, scale=0.2, chains=2, draws=100, tune=100
    )
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        res = cal.run_calibration(cfg, tmp_path, client=client)
    assert not res.failed, res.failed
    t = res.table
    assert sorted(t["seed"].unique()) == [101, 102]
    per = t.groupby("dataset")["quantity"].value_counts().unstack()
    assert (per["rate"] == 60).all() and (per["rate_mean"] == 20).all()
    assert t["cover90"].notna().all() and t["fit_s"].gt(0).all()
    assert (tmp_path / "figures" / "coverage_by_layer_stage.png").exists()


@pytest.mark.slow
def test_sbc_with_simuk_on_a_toy_model(tmp_path, monkeypatch):
    """The --sbc path end to end (simuk, ranks, ECDF figure) on a model with an observed
    variable; the package's models must expose one too (see run_sbc)."""
    pytest.importorskip("simuk")
    import pymc as pm

    class Toy:
        table = "layers"

        def prepare(self, table):
            return np.random.default_rng(0).normal(1.0, 1.0, 30)

        def build(self, y):
            with pm.Model() as m:
                mu = pm.Normal("mu", 0.0, 1.0)
                sigma = pm.HalfNormal("sigma", 1.0)
                pm.Normal("y", mu, sigma, observed=y)
            return m

        def settings(self, **kw):
            return SimpleNamespace(sampler="pymc", chains=1, draws=60, tune=60)

    monkeypatch.setattr(cal, "get_model", lambda name, spec=None: Toy())
    monkeypatch.setattr(
        cal,
        "simulate_and_harmonize",
        lambda config, seed, workdir: (SimpleNamespace(layers=None), TRUTH),
    )
    cfg = cal.CalibrationConfig(model="hier_rates", datasets=1, seed_start=3)
    summary, _ = cal.run_sbc(cfg, tmp_path, 4, progressbar=False)
    assert set(summary["variable"]) == {"mu", "sigma"} and summary["ranks"].eq(4).all()
    assert (tmp_path / "sbc_ranks.nc").exists() and (tmp_path / "figures" / "sbc_ecdf.png").exists()


@pytest.mark.slow
def test_sbc_of_the_marginal_hier_rates_on_a_tiny_design(tmp_path):
    """The package's own SBC path (likelihood a Potential: the model's prior predictive, one
    compiled model with swapped response data): every sampled parameter is ranked, ranks lie
    in 0..99 and, pooled, centre on the middle as calibrated ranks do."""
    cfg = cal.CalibrationConfig(
        model="hier_rates", datasets=1, seed_start=7, scale=0.05, draws=150, tune=150, chains=2
    )
    summary, _ = cal.run_sbc(cfg, tmp_path, 12, progressbar=False)
    assert {"mu_beta", "sigma", "sd_unit", "alpha"} <= set(summary["variable"])
    assert (summary["ranks"] == 12 * summary["cells"]).all()
    import xarray as xr

    ranks = xr.open_datatree(tmp_path / "sbc_ranks.nc", engine="h5netcdf")["prior_sbc"]
    pooled = np.concatenate([ranks[v].values.ravel() for v in ranks.data_vars])
    assert pooled.min() >= 0 and pooled.max() <= cal.SBC_RANKED_DRAWS
    assert 35 < pooled.mean() < 65


def test_report_shows_a_calibration_folder(tmp_path, fake_pipeline):
    """`report --calibration DIR` puts the coverage table in its own section of the page."""
    import dataclasses

    from report_fakes import fake_report_inputs

    from bayes_soil.report.html import build_html
    from bayes_soil.workflow import calibration_table

    out = tmp_path / "calib"
    argv = ["calibrate", "--model", "hier_rates", "--datasets", "2", "--workers", "0"]
    assert main([*argv, "--out", str(out), "--quiet", "--no-figures"]) == 0
    lines = []
    table = calibration_table([out], lines.append)
    assert set(table["quantity"]) >= {"rate"} and (table["datasets"] == 2).all()
    assert lines == [f"calibration table read from {out}"]
    page = build_html(dataclasses.replace(fake_report_inputs(), calibration=table))
    section = page[page.index("<section id='calibration'>") :]
    section = section[: section.index("</section>")]
    assert "90% coverage" in section and "SYNTHETIC" in section
    empty = build_html(fake_report_inputs())
    assert "No calibration was given" in empty
    with pytest.raises(InputError, match="not an output folder of 'calibrate'"):
        calibration_table([tmp_path], lines.append)


def test_per_fit_table_shows_each_fit_gate_cost_and_false_breaks():
    """One row per dataset, so a single bad fit is not hidden in the pooled summary."""
    parts = []
    for i, pb in enumerate((0.3, 0.8)):
        rows = cal.score_fit(_fake_climate_fit(p_break=pb, seed=i), TRUTH, "climate_breakpoints")
        parts.append(
            rows.assign(
                dataset=i, seed=100 + i, n_rows=50 + i, fit_s=10.0 * (i + 1), load_before=1.5
            )
        )
    per_fit = cal.per_fit_table(pd.concat(parts, ignore_index=True))
    assert list(per_fit["seed"]) == [100, 101] and list(per_fit["fit_s"]) == [10.0, 20.0]
    # every cell without a true break is a false break at P = 0.8, none at P = 0.3
    assert list(per_fit["false_breaks"]) == [0, int(per_fit["no_break_cells"].iloc[1])]
    assert (per_fit["cells"] == 3).all()  # exact-truth psi cells (0-200 MAP is approximate)
    assert list(per_fit["worst_rhat_var"]) == ["sd_site"] * 2  # which parameter failed
    assert list(per_fit["worst_ess_var"]) == ["sigma"] * 2
    md = cal.per_fit_markdown(per_fit)
    assert md.count("\n") == 3 and "| 101 |" in md
