"""GROA importer: a hand-made mini release (fast) and the real release (shared_data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_soil.cli import main
from bayes_soil.importers import import_groa
from bayes_soil.validate import load_observations

SOIL_HEADER = (
    '"","measurement.id","plot.id","site.id","study.id","refor.type","prior","stand.age","n",'
    '"sub_n","plot.size","variables.name","mean_ha","covar_1","coV1_value","covar_2",'
    '"coV2_value","covar_3","coV3_value","ref","clay","silt","sand","texture"'
)
# line numbers in soil.csv: header = 1, so the k-th row below is on line k + 1
SOIL_ROWS = [
    # 2: SOC stock, plot 11 age 10, 0-10 cm
    '"1",101,11,1,500,"SNR","PA",10,1,3,NA,"SOC",30.5,"max_depth",10,"min_depth",0,"",NA,'
    '"site_ref",20,30,50,NA',
    # 3: %C of the same plot/age/interval, with BD: merged into the row above
    '"2",102,11,1,500,"SNR","PA",10,1,3,NA,"soil_perC",2.5,"max_depth",10,"min_depth",0,'
    '"bulk_density",1.2,"site_ref",20,30,50,NA',
    # 4: %SOM 10-30 cm with BD 0.25 (out of range: dropped, row kept); covariates swapped
    '"3",103,11,1,500,"SNR","PA",10,1,3,NA,"SOM_per",3.1,"min_depth",10,"max_depth",30,'
    '"bulk_density",0.25,"site_ref",NA,NA,NA,NA',
    # 5: pasture reference (control)
    '"4",104,12,1,500,"PA","PA",0,1,3,NA,"SOC",25,"max_depth",10,"min_depth",0,"",NA,'
    '"site_ref",NA,NA,NA,NA',
    # 6: a repeated measurement of the same reference plot and interval -> plot 12r2
    '"5",105,12,1,500,"PA","PA",0,1,3,NA,"SOC",27,"max_depth",10,"min_depth",0,"",NA,'
    '"site_ref",NA,NA,NA,NA',
    # 7: site 2 has no AMT -> kept with mat_c empty (site_chrono: control_scope site)
    '"6",106,21,2,500,"SNR","C",5,1,3,NA,"SOC",20,"max_depth",20,"min_depth",0,"",NA,'
    '"site_chrono",NA,NA,NA,NA',
    # 8: site 9 is not in sites.csv -> rejected
    '"7",107,31,9,501,"SNR","C",5,1,3,NA,"SOC",20,"max_depth",20,"min_depth",0,"",NA,'
    '"site_chrono",NA,NA,NA,NA',
    # 9: not a soil C pool -> rejected
    '"8",108,11,1,500,"SNR","PA",10,1,3,NA,"litter_carbon",2,"max_depth",10,"min_depth",0,'
    '"",NA,"site_ref",NA,NA,NA,NA',
    # 10: 0-30 overlaps 0-10 and 10-30 of plot 11 at age 10 -> rejected
    '"9",109,11,1,500,"SNR","PA",10,1,3,NA,"SOC",70,"max_depth",30,"min_depth",0,"",NA,'
    '"site_ref",NA,NA,NA,NA',
    # 11: SOC of the 10-year plot 13 at another site with the other study
    '"10",110,13,3,501,"SNR","C",40,1,3,NA,"SOC",40,"max_depth",20,"min_depth",0,"",NA,'
    '"study_chrono",NA,NA,NA,NA',
]
SITES = (
    ",site.id,study.id,site.sitename,site.state,site.country,lat_dec,long_dec,elevation,AMT,AMP,"
    "soil.classification\n"
    "1,1,500,Sítio Açaí,,Brasil,-3.5,-60.25,100,26.5,1000,Oxisols\n"
    "2,1,501,Sítio Açaí again,,Brasil,-3.6,-60.3,100,27.0,2000,Oxisols\n"
    "3,2,500,Dry,,Mexico,19.0,-99.0,1000,NA,800,\n"
    "4,3,501,Cerro,,Mexico,18.0,-98.0,1000,20.0,900,\n"
)
LITERATURE = (
    "study.id,citations.author,citations.year,citations.journal,citations.title\n"
    '500,Muñoz,2015,"ECOLOGY, 1, 1-2",A title\n'
    "501,Smith,2010,J SOILS 3:4-5,Another\n"
)


@pytest.fixture
def mini_groa(tmp_path: Path) -> Path:
    d = tmp_path / "groa"
    d.mkdir()
    (d / "soil.csv").write_bytes(("\n".join([SOIL_HEADER, *SOIL_ROWS]) + "\n").encode("latin-1"))
    (d / "sites.csv").write_bytes(SITES.encode("latin-1"))
    (d / "GROA_literature.csv").write_bytes(LITERATURE.encode("latin-1"))
    return d


def test_mini_release_mapping(mini_groa):
    result = import_groa(mini_groa)
    obs = result.observations.set_index("obs_id")
    rep = result.report
    assert rep["rows_read"] == 10
    assert rep["rows_written"] + rep["rows_rejected"] == 10
    assert (rep["rows_written"], rep["rows_rejected"], rep["observation_rows"]) == (7, 3, 6)
    # a site without AMT keeps its rows: mat_c empty, map_mm kept, the note names the site
    no_mat = obs.loc["groa-106"]
    assert np.isnan(no_mat["mat_c"]) and no_mat["map_mm"] == 800.0
    assert "site.id 2 has no AMT" in no_mat["import_note"]
    assert rep["rows_without_driver"] == {"map_mm": 0, "mat_c": 1}
    # GROA's ref across sites (study_chrono) -> the study's controls may stand for the site
    assert obs.loc["groa-110", "control_scope"] == "study"
    assert obs.loc["groa-101", "control_scope"] == "site"
    assert rep["rows_control_scope_study"] == 1

    merged = obs.loc["groa-101"]
    assert merged["groa_measurement_ids"] == "101;102"
    assert merged["soc_stock_mg_ha"] == pytest.approx(30.5)
    assert merged["soc_g_kg"] == pytest.approx(25.0)  # 2.5 % x 10
    assert merged["bd_g_cm3"] == pytest.approx(1.2)
    assert (merged["depth_top_cm"], merged["depth_bottom_cm"], merged["years"]) == (0, 10, 10)
    # first site.id row wins: lat -3.5, AMP 1000, AMT 26.5
    assert (merged["lat"], merged["lon"], merged["map_mm"], merged["mat_c"]) == (
        -3.5,
        -60.25,
        1000.0,
        26.5,
    )
    assert (merged["vegetation"], merged["origin"]) == ("forest", "natural")
    assert merged["clay_pct"] == 20
    assert merged["source"].startswith("Muñoz 2015, ECOLOGY, 1, 1-2; GROA")

    som = obs.loc["groa-103"]
    assert (som["depth_top_cm"], som["depth_bottom_cm"]) == (10, 30)  # swapped covariates
    assert som["som_g_kg"] == pytest.approx(31.0)
    assert np.isnan(som["bd_g_cm3"])
    assert "0.25 outside" in som["import_note"]

    assert obs.loc["groa-104", "years"] == 0 and obs.loc["groa-104", "plot_id"] == "12"
    assert obs.loc["groa-105", "plot_id"] == "12r2"
    assert obs.loc["groa-110", "years"] == 40

    rejected = result.rejected.set_index("source_line")
    assert list(rejected.index) == [8, 9, 10]
    assert rejected.loc[8, "reason"] == "site.id 9 is not in sites.csv"
    assert "litter_carbon" in rejected.loc[9, "reason"]
    assert (
        rejected.loc[10, "reason"] == "interval 0-30 cm overlaps 0-10 cm of the same plot and age"
    )
    assert rejected.loc[10, "measurement_id"] == "109"


def test_mini_release_cli_writes_valid_table(mini_groa, tmp_path, capsys):
    out = tmp_path / "out" / "obs.csv"
    assert main(["import", "groa", str(mini_groa), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "read 10 rows = 7 written + 3 rejected" in text
    rejected = pd.read_csv(out.with_name("obs_rejected.csv"))
    assert list(rejected.columns) == ["measurement_id", "source_line", "reason"]
    assert len(rejected) == 3
    assert main(["validate", "--data", str(out)]) == 0
    assert "1 rows without mat_c" in capsys.readouterr().out
    obs = load_observations(out)
    assert len(obs) == 6 and set(obs["study_id"]) == {"500", "501"}


def test_missing_release_files_give_exit_2_and_no_output(tmp_path, capsys):
    d = tmp_path / "groa"
    d.mkdir()
    (d / "soil.csv").write_text(SOIL_HEADER + "\n" + SOIL_ROWS[0] + "\n")
    out = tmp_path / "obs.csv"
    assert main(["import", "groa", str(d), "--out", str(out)]) == 2
    assert "sites.csv: file not found" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob("*.csv")) == []


# ------------------------------------------------------------------------------------------
# the real release


@pytest.fixture(scope="module")
def groa_import(shared_data, tmp_path_factory):
    """Import the real GROA release once through the CLI."""
    out = tmp_path_factory.mktemp("groa") / "groa_observations.csv"
    code = main(["import", "groa", str(shared_data / "groa"), "--out", str(out)])
    assert code == 0
    return out


def _raw_soil(shared_data: Path) -> pd.DataFrame:
    soil = pd.read_csv(shared_data / "groa" / "soil.csv", encoding="latin-1")
    soil["line"] = np.arange(len(soil)) + 2
    return soil


def test_groa_accounting(groa_import, shared_data):
    raw = _raw_soil(shared_data)
    obs = pd.read_csv(groa_import, dtype={"groa_measurement_ids": str})
    rejected = pd.read_csv(groa_import.with_name("groa_observations_rejected.csv"))
    written = [int(m) for ids in obs["groa_measurement_ids"] for m in ids.split(";")]
    # every source row is written or rejected, exactly once
    assert len(raw) == 1931
    assert len(written) + len(rejected) == len(raw)
    assert sorted(written + rejected["measurement_id"].tolist()) == sorted(raw["measurement.id"])
    # measured on the release (commit e3c8328): 18 rows of sites not in sites.csv and two
    # 0-30 cm rows overlapping 0-5/5-10/10-20 of the same plots (study 2542); sites without
    # AMT/AMP keep their rows (before: 416 rejected, 396 of them for a missing driver only)
    assert len(rejected) == 20
    assert rejected["reason"].str.contains("not in sites.csv").sum() == 18
    assert obs["mat_c"].isna().sum() == 396 and obs["map_mm"].isna().sum() == 111
    assert rejected["reason"].str.contains("overlaps").sum() == 2
    lines = raw.set_index("measurement.id")["line"]
    assert (
        rejected["source_line"].to_numpy() == lines[rejected["measurement_id"]].to_numpy()
    ).all()


def test_groa_output_validates(groa_import, capsys):
    assert main(["validate", "--data", str(groa_import)]) == 0
    assert "1911 rows" in capsys.readouterr().out


def test_groa_values_match_raw_file(groa_import, shared_data):
    raw = _raw_soil(shared_data).set_index("measurement.id")
    sites = pd.read_csv(shared_data / "groa" / "sites.csv", encoding="latin-1")
    sites = sites.drop_duplicates("site.id", keep="first").set_index("site.id")
    obs = pd.read_csv(groa_import, dtype={"groa_measurement_ids": str, "plot_id": str})
    first = obs["groa_measurement_ids"].str.split(";").str[0].astype(int)
    r = raw.loc[first]
    assert (obs["study_id"].to_numpy() == r["study.id"].to_numpy()).all()
    assert (obs["site_id"].to_numpy() == r["site.id"].to_numpy()).all()
    assert (obs["depth_top_cm"].to_numpy() == r["coV2_value"].to_numpy()).all()
    assert (obs["depth_bottom_cm"].to_numpy() == r["coV1_value"].to_numpy()).all()
    expected_years = np.where(r["refor.type"] == "SNR", r["stand.age"], 0.0)
    assert np.array_equal(obs["years"].to_numpy(), expected_years)
    s = sites.loc[r["site.id"]]
    assert np.allclose(obs["lat"], s["lat_dec"]) and np.allclose(obs["lon"], s["long_dec"])
    assert np.allclose(obs["map_mm"], s["AMP"], equal_nan=True)
    assert np.allclose(obs["mat_c"], s["AMT"], equal_nan=True)
    for var, col, factor in (
        ("SOC", "soc_stock_mg_ha", 1.0),
        ("soil_perC", "soc_g_kg", 10.0),
        ("SOM_per", "som_g_kg", 10.0),
    ):
        hit = (r["variables.name"] == var).to_numpy()
        assert np.allclose(obs.loc[hit, col], r.loc[hit, "mean_ha"] * factor)
    # spot values read by eye from soil.csv / sites.csv
    row = obs.loc[obs["obs_id"] == "groa-59"].iloc[0]
    assert (row["study_id"], row["site_id"], row["plot_id"]) == (246, 2405, "1533")
    assert (row["years"], row["depth_top_cm"], row["depth_bottom_cm"]) == (2, 0, 5)
    assert row["soc_g_kg"] == pytest.approx(35.0)
    assert (row["lat"], row["map_mm"], row["mat_c"]) == (5.993611, 2250, 19.5)
    control = obs.loc[obs["groa_refor_type"] != "SNR"]
    assert len(control) > 100 and (control["years"] == 0).all()
