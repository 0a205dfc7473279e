"""bayes_soil.workflow (what report runs): what it reuses, what it refuses, what it runs (fake
fits, no sampling), and (slow) the whole analysis of a small simulated dataset with --quick."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from report_fakes import fake_breakpoints_fit, fake_freq_tables, fake_harmonized, fake_rates_fit

from bayes_soil import workflow
from bayes_soil.cli import main
from bayes_soil.fits import save_fit
from bayes_soil.harmonize import load_harmonized, write_harmonized


def _no_figures(make, caption, alt):
    return f"<figure><figcaption>{alt}</figcaption></figure>"


@pytest.fixture
def no_figures(monkeypatch):
    """The page's text is what these tests read; pixels are the browser test's job."""
    monkeypatch.setattr("bayes_soil.report.figure_embed.figure_html", _no_figures)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A harmonized folder, a freq folder and a fit store holding fits of that data and others."""
    root = tmp_path_factory.mktemp("pipe")
    write_harmonized(fake_harmonized(), root / "harm")
    sha = load_harmonized(root / "harm").data_sha256
    freq = root / "freq"
    freq.mkdir()
    for name, df in fake_freq_tables().items():
        df.to_csv(freq / f"{name}.csv", index=False)
    (freq / "freq_provenance.json").write_text(json.dumps({"data_sha256": sha}))
    fits = root / "fits"

    def put(
        dt, model, name, *, data=sha, created="2026-11-25T12:00:00+00:00", quick=False, spec=None
    ):
        from bayes_soil.models import get_model

        spec = get_model(model).spec_json() if spec is None else spec
        dt.attrs.update(data_sha256=data, created_at=created, spec=spec)
        if quick:
            dt.attrs[workflow.QUICK_ATTR] = 1
        sub = fits / "quick" / model if quick else fits / model
        return save_fit(dt, sub / f"{name}.nc")

    paths = {
        "old": put(
            fake_rates_fit(seed=11), "hier_rates", "old", created="2026-11-01T00:00:00+00:00"
        ),
        "new": put(fake_rates_fit(seed=12), "hier_rates", "new"),
        "other": put(
            fake_rates_fit(seed=13),
            "hier_rates",
            "other-data",
            data="cd" * 32,
            created="2026-12-01T00:00:00+00:00",
        ),
        "quick": put(
            fake_rates_fit(seed=14),
            "hier_rates",
            "quick",
            created="2026-12-02T00:00:00+00:00",
            quick=True,
        ),
        "bp": put(fake_breakpoints_fit(), "climate_breakpoints", "bp"),
        "other_spec": put(
            fake_rates_fit(seed=15),
            "hier_rates",
            "other-spec",
            created="2026-12-03T00:00:00+00:00",
            spec='{"data": {"elements": ["C"]}}',
        ),
    }
    return {"root": root, "harm": root / "harm", "freq": freq, "fits": fits, "sha": sha, **paths}


def report_argv(store, out, *extra, fits=None, freq=None, reuse_only=True):
    """``report`` on the stored harmonized demo, its fits and frequentist tables (or others)."""
    argv = ["report", "--data", str(store["harm"]), "--fits-dir", str(fits or store["fits"])]
    argv += ["--freq-dir", str(freq or store["freq"]), "--out", str(out), *extra]
    return [*argv, "--reuse-only"] if reuse_only else argv


def test_find_fit_takes_the_newest_of_this_data_and_skips_quick_fits(store):
    from bayes_soil.models import get_model

    lines = []
    got = workflow.find_fit(
        store["fits"],
        "hier_rates",
        store["sha"],
        allow_quick=False,
        log=lines.append,
        spec_json=get_model("hier_rates").spec_json(),
    )
    # not 'old' (older), 'other' (other data), 'quick', nor the newest 'other_spec'
    assert got == store["new"]
    assert lines == [
        f"ignored 1 hier_rates fit(s) in {store['fits']} made from other data",
        f"ignored 1 hier_rates fit(s) in {store['fits']} made with another spec",
    ]
    quick = workflow.find_fit(
        store["fits"],
        "hier_rates",
        store["sha"],
        allow_quick=True,
        spec_json=get_model("hier_rates").spec_json(),
    )
    assert quick == store["quick"]
    assert workflow.find_fit(store["fits"], "hier_rates", "ef" * 32, allow_quick=True) is None


def test_report_reuses_fits_and_tables(store, tmp_path, no_figures, capsys):
    out = tmp_path / "r.html"
    code = main(report_argv(store, out))
    assert code == 0
    page = out.read_text()
    err = capsys.readouterr().err
    assert f"reused hier_rates fit {store['new']}" in err
    assert f"reused climate_breakpoints fit {store['bp']}" in err
    assert f"reused frequentist tables from {store['freq']}" in err
    assert "QUICK MODE" not in page
    assert str(store["new"]) in page and str(store["old"]) not in page
    # the agreement counts, read from the reused tables
    assert re.search(
        r"Of \d+ rate cells that both estimate, OLS and posterior agree in \d+, disagree in "
        r"\d+ and are inconclusive in \d+",
        page,
    )
    assert "<span class='badge pass'>PASSED</span>" in page


def test_quick_report_uses_and_labels_quick_fits(store, tmp_path, no_figures):
    out = tmp_path / "q.html"
    assert main(report_argv(store, out, "--quick")) == 0
    page = out.read_text()
    assert "QUICK MODE" in page and str(store["quick"]) in page


def test_fit_pointed_to_must_come_from_the_same_data(store, tmp_path, no_figures, capsys):
    out = tmp_path / "x.html"
    code = main(report_argv(store, out, "--fit", str(store["other"])))
    assert code == 2
    assert "made from other data" in capsys.readouterr().err
    assert not out.exists()


def test_freq_tables_of_other_data_are_refused(store, tmp_path, no_figures, capsys):
    freq = tmp_path / "freq"
    freq.mkdir()
    for name, df in fake_freq_tables().items():
        df.to_csv(freq / f"{name}.csv", index=False)
    (freq / "freq_provenance.json").write_text(json.dumps({"data_sha256": "cd" * 32}))
    code = main(report_argv(store, tmp_path / "y.html", freq=freq))
    assert code == 2
    assert "made from other data" in capsys.readouterr().err


def test_missing_freq_tables_are_computed_and_written(store, tmp_path, no_figures):
    freq = tmp_path / "newfreq"
    out = tmp_path / "z.html"
    assert main(report_argv(store, out, fits=tmp_path / "none", freq=freq)) == 0
    rates = pd.read_csv(freq / "rates.csv")
    assert {"element", "layer", "vegetation", "stage", "k", "ci_low", "ci_high"} <= set(
        rates.columns
    )
    assert json.loads((freq / "freq_provenance.json").read_text())["data_sha256"] == store["sha"]
    page = out.read_text()
    # no fit at all: said, not hidden
    assert "No hier_rates fit is available" in page
    assert "No climate_breakpoints fit is available" in page


@pytest.mark.slow
def test_quick_report_of_a_small_simulated_dataset(tmp_path):
    """The whole analysis from observations: harmonize, freq, both fits (quick), compare,
    page; then a second run reuses everything and samples nothing."""
    from bayes_soil.simulate import simulate, write_simulation

    sim = simulate(seed=5, scale=0.2)
    write_simulation(sim, tmp_path / "sim")
    args = [
        "report",
        "--data",
        str(tmp_path / "sim" / "observations.csv"),
        "--fits-dir",
        str(tmp_path / "fits"),
        "--out",
        str(tmp_path / "r.html"),
        "--quick",
    ]
    assert main(args) == 0
    page = (tmp_path / "r.html").read_text()
    assert "QUICK MODE" in page and "SYNTHETIC" in page
    assert "could not be drawn" not in page
    assert "The 0-200 cm C rate in years 0-5 is" in page
    assert "along MAP in" in page and "P(turning point)" in page
    stored = sorted((tmp_path / "fits" / "quick").glob("*/*.nc"))
    assert [p.parent.name for p in stored] == ["climate_breakpoints", "hier_rates"]
    mtimes = [p.stat().st_mtime for p in stored]
    assert main([*args, "--reuse-only"]) == 0
    assert sorted((tmp_path / "fits" / "quick").glob("*/*.nc")) == stored
    assert [p.stat().st_mtime for p in stored] == mtimes


def test_a_fit_that_crashes_is_reported_not_lost(store, tmp_path, no_figures, monkeypatch):
    import shutil

    fits = tmp_path / "fits"
    (fits / "hier_rates").mkdir(parents=True)
    shutil.copy(store["new"], fits / "hier_rates" / "new.nc")
    calls = []

    def boom(model, harmonized, **kw):
        calls.append(model)
        raise RuntimeError("sampler exploded")

    monkeypatch.setattr(workflow, "run_fit", boom)
    out = tmp_path / "c.html"
    code = main(report_argv(store, out, fits=fits, reuse_only=False))
    assert code == 1 and calls == ["climate_breakpoints"]
    page = out.read_text()
    assert (
        "Fitting climate_breakpoints FAILED with an error: RuntimeError: sampler exploded" in page
    )
    assert "The 0-200 cm C rate in years 0-5 is" in page  # the rest is still there
