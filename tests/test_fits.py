"""Fast tier: the fit store (save/load, provenance, refusal, listing, partials) and the gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import arviz_base as ab
import numpy as np
import pytest
import xarray as xr
from scipy.signal import lfilter

from bayes_soil import fits
from bayes_soil.cli import main
from bayes_soil.errors import InputError
from bayes_soil.models import get_model


def _fake_fit(sha: str = "a" * 64, rhat_bad: bool = False, divergences: int = 0) -> xr.DataTree:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 500, 3))
    if rhat_bad:
        x = x + np.arange(4)[:, None, None]  # chains disagree
    diverging = np.zeros((4, 500), dtype=bool)
    diverging.flat[:divergences] = True
    dt = ab.from_dict(
        {
            "posterior": {"beta": x},
            "sample_stats": {"diverging": diverging, "n_steps": np.full((4, 500), 7.0)},
            "observed_data": {"stock": rng.normal(size=10)},
        },
        dims={"beta": ["fit_layer"], "stock": ["obs_id"]},
        coords={"fit_layer": ["0-20", "20-100", "100-200"]},
    )
    diag = fits.check_diagnostics(dt)
    dt.attrs.update(
        fits.provenance_attrs(
            model="hier_rates",
            spec_json=json.dumps({"data": {"elements": ["C"]}}),
            settings=get_model("hier_rates").settings(seed=7),
            data_sha256=sha,
            synthetic=True,
            diagnostics=diag,
        )
    )
    return dt


def test_save_load_roundtrip_keeps_draws_and_attrs(tmp_path):
    dt = _fake_fit()
    path = fits.save_fit(dt, tmp_path / "hier_rates" / "run1.nc")
    back = fits.load_fit(path, expected_sha256="a" * 64)
    np.testing.assert_array_equal(back["posterior"]["beta"].values, dt["posterior"]["beta"].values)
    assert back.attrs["model"] == "hier_rates"
    assert back.attrs["seed"] == 7
    assert back.attrs["synthetic"] == 1
    assert json.loads(back.attrs["sampler"])["sampler"] == "nutpie"
    assert "pymc" in json.loads(back.attrs["library_versions"])
    assert back.attrs["diagnostics_verdict"] == "pass"
    assert list(back["posterior"]["fit_layer"].values) == ["0-20", "20-100", "100-200"]
    # nothing but the fit in the folder (no partial file left)
    assert [p.name for p in (tmp_path / "hier_rates").iterdir()] == ["run1.nc"]


def test_fit_made_from_other_data_is_refused(tmp_path):
    path = fits.save_fit(_fake_fit(sha="a" * 64), tmp_path / "f.nc")
    with pytest.raises(InputError, match="made from other data"):
        fits.load_fit(path, expected_sha256="b" * 64)


def test_load_refuses_a_file_that_is_not_a_fit(tmp_path):
    p = tmp_path / "x.nc"
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(p, engine="h5netcdf")
    with pytest.raises(InputError, match="not a bayes_soil fit"):
        fits.load_fit(p)
    with pytest.raises(InputError, match="not found"):
        fits.load_fit(tmp_path / "missing.nc")
    (tmp_path / "junk.nc").write_text("not netcdf")
    with pytest.raises(InputError, match="cannot be read"):
        fits.load_fit(tmp_path / "junk.nc")


def test_save_refuses_a_fit_without_provenance(tmp_path):
    dt = ab.from_dict({"posterior": {"a": np.zeros((1, 5))}})
    with pytest.raises(ValueError, match="provenance"):
        fits.save_fit(dt, tmp_path / "f.nc")
    assert not list(tmp_path.iterdir())


def test_partial_file_of_a_dead_writer_is_cleaned(tmp_path):
    folder = tmp_path / "hier_rates"
    folder.mkdir()
    # a writer that no longer exists (a finished child process) left its partial file
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = folder / f".run0.nc.{int(proc.stdout)}.partial"
    dead.write_text("half a fit")
    alive = folder / f".run9.nc.{os.getpid()}.partial"  # our own: still being written
    alive.write_text("in progress")
    fits.save_fit(_fake_fit(), folder / "run1.nc")
    assert not dead.exists()
    assert alive.exists()
    assert fits.list_fits(tmp_path)["run_id"].tolist() == ["run1"]


def test_list_fits_and_cli(tmp_path, capsys):
    fits.save_fit(_fake_fit(), tmp_path / "hier_rates" / "r1.nc")
    fits.save_fit(_fake_fit(rhat_bad=True), tmp_path / "hier_rates" / "r2.nc")
    df = fits.list_fits(tmp_path)
    assert df["verdict"].tolist() == ["pass", "fail"]
    assert (df["data_sha256"] == "a" * 12).all()
    assert main(["fits", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "r1" in out and "fail" in out and "hier_rates" in out


def test_gate_thresholds():
    ok = fits.diagnostics_verdict(1.01, 400, 0)
    assert ok["verdict"] == "pass" and ok["advice"] == ""
    assert fits.diagnostics_verdict(1.0101, 5000, 0)["verdict"] == "fail"
    low = fits.diagnostics_verdict(1.0, 399.9, 0)
    assert low["verdict"] == "fail" and "--draws" in low["advice"]
    div = fits.diagnostics_verdict(1.0, 5000, 1)
    assert div["verdict"] == "fail" and "target-accept" in div["advice"]
    assert fits.diagnostics_verdict(float("nan"), 1000, 0)["verdict"] == "fail"


def test_check_diagnostics_on_draws():
    good = fits.check_diagnostics(_fake_fit())
    assert good["verdict"] == "pass" and good["max_rhat"] < 1.01
    assert good["mean_steps_per_draw"] == 7.0
    bad = fits.check_diagnostics(_fake_fit(rhat_bad=True))
    assert bad["verdict"] == "fail" and bad["max_rhat"] > 1.5
    assert bad["worst_rhat_var"] == "beta"
    div = fits.check_diagnostics(_fake_fit(divergences=3))
    assert div["verdict"] == "fail" and div["divergences"] == 3


def _draws_dt(**variables: np.ndarray) -> xr.DataTree:
    return ab.from_dict({"posterior": variables})


def test_gate_judges_tail_ess_and_lists_nuisance():
    rng = np.random.default_rng(1)
    iid = rng.normal(size=(4, 1000, 2))
    # AR(1) draws (phi 0.9): chains agree roughly (R-hat ~1.03) but mix slowly (ESS ~150)
    walk = lfilter([1.0], [1.0, -0.9], rng.normal(size=(4, 1000)), axis=1)
    diag = fits.check_diagnostics(
        _draws_dt(p_break=iid, sd_site=walk), var_names=["p_break"], nuisance=["sd_site"]
    )
    assert diag["judged_vars"] == ["p_break"] and diag["nuisance_vars"] == ["sd_site"]
    assert diag["min_ess_tail"] > 400 and diag["ess_tail_min_required"] == 400
    assert diag["worst_nuisance_rhat_var"] == "sd_site"
    # the nuisance parameter mixes worse than the judged one and is listed, not gated below 1.05
    assert diag["nuisance_min_ess_bulk"] < 400 < diag["min_ess_bulk"]
    assert 1.01 < diag["nuisance_max_rhat"] < 1.05
    assert diag["verdict"] == "pass", diag["problems"]
    # chains that disagree outright fail the fit even on a nuisance parameter
    apart = rng.normal(size=(4, 1000)) + np.arange(4)[:, None]
    bad = fits.check_diagnostics(
        _draws_dt(p_break=iid, sd_site=apart), var_names=["p_break"], nuisance=["sd_site"]
    )
    assert bad["verdict"] == "fail" and "nuisance" in bad["problems"]
    # too few independent draws in the tails fails on the judged quantity
    short = rng.normal(size=(4, 60))
    low = fits.check_diagnostics(_draws_dt(psi=short))
    assert low["min_ess_tail"] < 400 and "tail ESS" in low["problems"]


def test_gate_skips_cells_without_a_turning_point_in_every_draw():
    rng = np.random.default_rng(2)
    psi = rng.normal(size=(4, 500, 2))
    psi[0, :250, 1] = np.nan  # no break drawn there: psi given a break is judged elsewhere
    psi[..., 1] += np.arange(4)[:, None]  # that cell's chains disagree, but it is skipped
    diag = fits.check_diagnostics(_draws_dt(psi=psi))
    assert diag["max_rhat"] < 1.01 and diag["worst_rhat_var"] == "psi"
    both_nan = np.full((4, 500), np.nan)
    assert np.isnan(fits.check_diagnostics(_draws_dt(psi=both_nan))["max_rhat"])


def test_fit_path_is_unique(tmp_path):
    p1 = fits.fit_path("m", "run", tmp_path)
    p1.parent.mkdir(parents=True)
    p1.write_text("x")
    assert fits.fit_path("m", "run", tmp_path).name == "run-2.nc"
    assert fits.new_run_id("f" * 64, 3).endswith("-ffffffff-seed3")


def test_fits_run_chains_on_every_usable_cpu(monkeypatch):
    """PyMC's default cores halves the CPU count (1 on a 2-core machine); fits must not."""
    import os

    import pymc as pm

    from bayes_soil.models.base import FitSettings, chain_cores, sample_model

    cpus = len(os.sched_getaffinity(0))
    assert chain_cores(4) == min(4, cpus) and chain_cores(1) == 1
    seen = {}
    monkeypatch.setattr(pm, "sample", lambda **kw: seen.update(kw) or "trace")
    fs = FitSettings(
        "nutpie", chains=4, draws=10, tune=10, target_accept=0.8, pointwise_draws_per_chain=5
    )
    assert sample_model(pm.Model(), fs, progressbar=False) == "trace"
    assert seen["cores"] == min(4, cpus)
    fs.cores = 1
    sample_model(pm.Model(), fs, progressbar=False)
    assert seen["cores"] == 1
