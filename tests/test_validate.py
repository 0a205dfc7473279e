"""Validation of observation tables: one test per bad-input rule, through the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_soil.cli import main
from bayes_soil.errors import InputError
from bayes_soil.validate import (
    Problem,
    load_observations,
    summarize_observations,
    validate_observations,
)

HEADER = (
    "obs_id,study_id,site_id,plot_id,lon,lat,map_mm,mat_c,vegetation,origin,years,"
    "depth_top_cm,depth_bottom_cm,bd_g_cm3,soc_g_kg,som_g_kg,soc_stock_mg_ha,stn_g_kg,"
    "stn_stock_mg_ha,source"
)
# A valid chronosequence: control (years 0) and a 10-year plot, two intervals each.
ROWS = [
    "o1,s1,A,p1,108.1,36.5,500,9.1,forest,planted,0,0,20,1.30,8.1,,,0.80,,paper 1",
    "o2,s1,A,p1,108.1,36.5,500,9.1,forest,planted,0,20,40,1.35,5.0,,,0.50,,paper 1",
    "o3,s1,A,p1,108.1,36.5,500,9.1,forest,planted,10,0,20,1.25,9.5,,,0.90,,paper 1",
    "o4,s1,A,p1,108.1,36.5,500,9.1,forest,planted,10,20,40,,,10.2,,,,paper 1",
    "o5,s2,B,,105.0,37.0,350,7.5,grassland,natural,15,0,30,,,,20.5,,2.1,paper 2",
]


def write(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "obs.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def replace_cell(row: str, column: str, value: str) -> str:
    cells = row.split(",")
    cells[HEADER.split(",").index(column)] = value
    return ",".join(cells)


def run_validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["validate", "--data", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def assert_problem(text: str, path: Path, line: int, column: str, reason: str) -> None:
    """The message has one problem line naming this file, line, column and reason."""
    pattern = re.compile(
        rf"^\s*{re.escape(str(path))}, line {line}, column {re.escape(column)}\b.*{reason}",
        re.MULTILINE | re.IGNORECASE,
    )
    assert pattern.search(text), f"no problem for line {line}, column {column} in:\n{text}"


def test_valid_table_passes_with_summary(tmp_path, capsys):
    path = write(tmp_path, ROWS)
    code, text = run_validate(path, capsys)
    assert code == 0, text
    assert "5 rows, 2 studies, 2 sites, 3 profiles" in text
    assert "SYNTHETIC" not in text
    assert "warning" not in text


def test_row_without_quantity_is_only_a_warning(tmp_path, capsys):
    row = "o6,s2,B,,105.0,37.0,350,7.5,grassland,natural,15,30,60,1.4,,,,,,paper 2"
    code, text = run_validate(write(tmp_path, [*ROWS, row]), capsys)
    assert code == 0, text
    assert "warning: 1 rows have no C or N quantity" in text


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("lon", "abc", "not a number"),
        ("soc_g_kg", "1,2".replace(",", ";"), "not a number"),
        ("mat_c", "inf", "not a finite number"),
        ("map_mm", "-10", "precipitation"),
        ("years", "-1", "years since revegetation must be >= 0"),
        ("lat", "91", "latitude above 90"),
        ("lat", "-90.5", "latitude below -90"),
        ("lon", "180.1", "longitude above 180"),
        ("lon", "-181", "longitude below -180"),
        ("depth_top_cm", "-5", "depth must be >= 0"),
        ("depth_bottom_cm", "-1", "depth must be >= 0"),
        ("vegetation", "woodland", "unknown vegetation"),
        ("origin", "wild", "unknown origin"),
        ("soc_g_kg", "-0.1", "must not be negative"),
        ("stn_stock_mg_ha", "-2", "must not be negative"),
        ("bd_g_cm3", "2.5", "bulk density outside 0.3-2.2"),
        ("bd_g_cm3", "0.2", "bulk density outside 0.3-2.2"),
        ("bd_g_cm3", "-1", "must not be negative"),
        ("soc_g_kg", "1200", "cannot exceed 1000"),
        ("study_id", "", "required value is missing"),
        ("years", "NA", "required value is missing"),
    ],
)
def test_bad_cell_is_named(tmp_path, capsys, column, value, reason):
    rows = list(ROWS)
    rows[2] = replace_cell(rows[2], column, value)  # third data row = line 4
    path = write(tmp_path, rows)
    code, text = run_validate(path, capsys)
    assert code == 2, text
    assert_problem(text, path, 4, column, reason)
    if value:
        assert repr(value) in text
    assert "1 problem found" in text


def test_inverted_depth(tmp_path, capsys):
    rows = list(ROWS)
    rows[1] = replace_cell(replace_cell(rows[1], "depth_top_cm", "40"), "depth_bottom_cm", "20")
    path = write(tmp_path, rows)
    code, text = run_validate(path, capsys)
    assert code == 2
    assert_problem(text, path, 3, "depth_bottom_cm", "greater than top depth")


def test_overlapping_intervals_in_one_profile(tmp_path, capsys):
    rows = list(ROWS)
    rows[3] = replace_cell(rows[3], "depth_top_cm", "15")  # 15-40 overlaps 0-20 (line 4)
    path = write(tmp_path, rows)
    code, text = run_validate(path, capsys)
    assert code == 2
    assert_problem(text, path, 5, "depth_top_cm", "overlaps interval 0-20 cm on line 4")


def test_same_interval_in_other_plot_is_fine(tmp_path, capsys):
    extra = replace_cell(ROWS[2], "obs_id", "o9").replace(",p1,", ",p2,")
    code, text = run_validate(write(tmp_path, [*ROWS, extra]), capsys)
    assert code == 0, text


def test_repeated_interval_in_one_profile(tmp_path, capsys):
    extra = replace_cell(ROWS[0], "obs_id", "o9")
    path = write(tmp_path, [*ROWS, extra])
    code, text = run_validate(path, capsys)
    assert code == 2
    assert_problem(text, path, 7, "depth_top_cm", "repeats interval 0-20 cm on line 2")


def test_duplicated_obs_id(tmp_path, capsys):
    rows = list(ROWS)
    rows[4] = replace_cell(rows[4], "obs_id", "o2")
    path = write(tmp_path, rows)
    code, text = run_validate(path, capsys)
    assert code == 2
    assert_problem(text, path, 6, "obs_id", r"duplicated obs_id \(first on line 3\)")


def test_missing_required_column(tmp_path, capsys):
    cols = HEADER.split(",")
    drop = cols.index("mat_c")
    header = ",".join(c for i, c in enumerate(cols) if i != drop)
    rows = [",".join(c for i, c in enumerate(r.split(",")) if i != drop) for r in ROWS]
    path = write(tmp_path, rows, header=header)
    code, text = run_validate(path, capsys)
    assert code == 2
    assert_problem(text, path, 1, "mat_c", "required column is missing")


def test_empty_file(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("\n  \n")
    code, text = run_validate(path, capsys)
    assert code == 2
    assert f"{path}: line 1" in text and "empty" in text


def test_header_only(tmp_path, capsys):
    path = write(tmp_path, [])
    code, text = run_validate(path, capsys)
    assert code == 2
    assert f"{path}: line 2" in text and "no data rows" in text


@pytest.mark.parametrize(("sep", "word"), [(";", "semicolon"), ("\t", "tab")])
def test_wrong_delimiter(tmp_path, capsys, sep, word):
    path = tmp_path / "obs.csv"
    path.write_text("\n".join(line.replace(",", sep) for line in [HEADER, *ROWS]) + "\n")
    code, text = run_validate(path, capsys)
    assert code == 2
    assert f"{path}: line 1, column" in text
    assert f"{word}-separated" in text


def test_row_with_extra_cells(tmp_path, capsys):
    rows = list(ROWS)
    rows[1] = rows[1] + ",stray"
    path = write(tmp_path, rows)
    code, text = run_validate(path, capsys)
    assert code == 2
    assert f"{path}: line 3: 21 cells but the header (line 1) has 20" in text


def test_every_problem_is_listed_and_capped(tmp_path, capsys):
    rows = [
        replace_cell(replace_cell(ROWS[0], "obs_id", f"x{i}"), "years", str(i)) for i in range(250)
    ]
    rows = [replace_cell(r, "lat", "99") for r in rows]
    path = write(tmp_path, rows)
    code, text = run_validate(path, capsys)
    assert code == 2
    assert "250 problems found" in text
    assert "... and 50 more problems" in text
    assert_problem(text, path, 201, "lat", "latitude above 90")
    assert f"{path}, line 252," not in text


def test_blank_lines_and_multiline_cells_keep_line_numbers(tmp_path, capsys):
    rows = list(ROWS)
    rows[0] = rows[0].replace("paper 1", '"paper\n1"')  # one record over lines 2-3
    rows.insert(1, "")  # blank line 4
    rows[2] = replace_cell(rows[2], "lat", "95")  # record starting on line 5
    path = write(tmp_path, rows)
    code, text = run_validate(path, capsys)
    assert code == 2
    assert_problem(text, path, 5, "lat", "latitude above 90")


def test_case_whitespace_and_column_names(tmp_path):
    header = HEADER.replace("vegetation", " Vegetation ").replace("study_id", "STUDY_ID")
    rows = [replace_cell(r, "vegetation", " FoReSt ") for r in ROWS[:4]]
    rows = [replace_cell(r, "origin", "Planted") for r in rows]
    df = load_observations(write(tmp_path, rows, header=header))
    assert df["vegetation"].tolist() == ["forest"] * 4
    assert df["origin"].tolist() == ["planted"] * 4
    assert df["study_id"].tolist() == ["s1"] * 4


def test_load_observations_types_and_lines(tmp_path):
    cols = HEADER.split(",")
    keep = [i for i, c in enumerate(cols) if c not in ("obs_id", "plot_id")]
    header = ",".join(cols[i] for i in keep) + ",notes"
    rows = [",".join(r.split(",")[i] for i in keep) + ",n" for r in ROWS]
    rows.insert(2, "")  # blank line 4: later rows shift by one line
    df = load_observations(write(tmp_path, rows, header=header))
    assert df["line"].tolist() == [2, 3, 5, 6, 7]
    assert df["line"].dtype == np.int64
    assert df["obs_id"].tolist() == ["row2", "row3", "row5", "row6", "row7"]
    assert set(df["plot_id"]) == {"p1"}
    for col in ("lon", "lat", "years", "depth_top_cm", "soc_g_kg", "stn_stock_mg_ha"):
        assert df[col].dtype == np.float64, col
    assert df["soc_stock_mg_ha"].iloc[4] == pytest.approx(20.5)
    assert np.isnan(df["soc_g_kg"].iloc[4])
    assert df["notes"].tolist() == ["n"] * 5  # extra columns pass through
    assert pd.api.types.is_string_dtype(df["study_id"])
    s = summarize_observations(df)
    assert s == {
        "rows": 5,
        "studies": 2,
        "sites": 2,
        "profiles": 3,
        "controls": 2,
        "no_quantity": 0,
        "no_map_mm": 0,
        "no_mat_c": 0,
    }


def test_load_observations_raises_with_every_problem(tmp_path):
    rows = list(ROWS)
    rows[0] = replace_cell(rows[0], "lat", "100")
    rows[4] = replace_cell(rows[4], "vegetation", "tree")
    with pytest.raises(InputError) as info:
        load_observations(write(tmp_path, rows))
    problems = info.value.problems
    assert [(p.line, p.column) for p in problems] == [(2, "lat"), (6, "vegetation")]


def test_validate_observations_on_typed_frame():
    df = pd.DataFrame(
        {
            "study_id": ["s1", "s1"],
            "site_id": ["A", "A"],
            "lon": [100.0, 100.0],
            "lat": [35.0, 35.0],
            "map_mm": [400.0, 400.0],
            "mat_c": [8.0, 8.0],
            "vegetation": ["Shrub", "shrub"],
            "origin": ["natural", "natural"],
            "years": [3.0, 3.0],
            "depth_top_cm": [0.0, 10.0],
            "depth_bottom_cm": [20.0, 30.0],
            "soc_g_kg": [5.0, 4.0],
        }
    )
    problems = validate_observations(df, "frame")
    assert problems == [
        Problem(
            "frame",
            3,
            "depth_top_cm",
            "10",
            problems[0].reason,
        )
    ]
    assert "overlaps interval 0-20 cm on line 2" in str(problems[0])
    assert str(problems[0]).startswith("frame, line 3, column depth_top_cm, value '10': ")


def test_latin1_file(tmp_path, capsys):
    rows = [r.replace("paper 1", "Müller & Sánchez") for r in ROWS]
    path = tmp_path / "latin1.csv"
    path.write_bytes(("\n".join([HEADER, *rows]) + "\n").encode("latin-1"))
    code, text = run_validate(path, capsys)
    assert code == 0, text
    assert load_observations(path)["source"].iloc[0] == "Müller & Sánchez"


def test_xlsx_input_and_line_numbers(tmp_path, capsys):
    df = pd.read_csv(write(tmp_path, ROWS), dtype=str, keep_default_na=False)
    path = tmp_path / "obs.xlsx"
    df.to_excel(path, index=False)
    code, text = run_validate(path, capsys)
    assert code == 0, text
    loaded = load_observations(path)
    assert loaded["line"].tolist() == [2, 3, 4, 5, 6]
    assert loaded["study_id"].tolist() == ["s1"] * 4 + ["s2"]
    df.loc[3, "vegetation"] = "cactus"
    df.to_excel(path, index=False)
    code, text = run_validate(path, capsys)
    assert code == 2
    assert_problem(text, path, 5, "vegetation", "unknown vegetation")


def test_parquet_input_with_numeric_dtypes(tmp_path, capsys):
    df = pd.read_csv(write(tmp_path, ROWS))
    path = tmp_path / "obs.parquet"
    df.to_parquet(path, index=False)
    loaded = load_observations(path)
    assert loaded["years"].tolist() == [0.0, 0.0, 10.0, 10.0, 15.0]
    assert loaded["som_g_kg"].iloc[3] == pytest.approx(10.2)
    df.loc[1, "years"] = -2.0
    df.to_parquet(path, index=False)
    code, text = run_validate(path, capsys)
    assert code == 2
    assert_problem(text, path, 3, "years", "must be >= 0")


def test_missing_file(tmp_path, capsys):
    path = tmp_path / "nope.csv"
    code, text = run_validate(path, capsys)
    assert code == 2
    assert "file not found" in text


def test_bundled_demo_validates_and_is_labelled_synthetic(capsys):
    code = main(["validate"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "SYNTHETIC" in text
    demo = load_observations(None)
    assert demo["source"].str.startswith("synthetic").all()
    assert demo["line"].iloc[0] == 2 and demo["line"].is_monotonic_increasing


def test_decimal_comma_gets_a_hint(tmp_path, capsys):
    rows = list(ROWS)
    rows[0] = replace_cell(rows[0], "soc_g_kg", '"8,1"')
    path = write(tmp_path, rows)
    code, text = run_validate(path, capsys)
    assert code == 2
    assert_problem(text, path, 2, "soc_g_kg", r"not a number \(use a decimal point")


def test_semicolon_file_whose_header_has_a_comma(tmp_path, capsys):
    header = HEADER.replace(",", ";").replace("source", "source,notes")
    rows = [r.replace(",", ";") for r in ROWS]
    path = write(tmp_path, rows, header=header)
    code, text = run_validate(path, capsys)
    assert code == 2
    assert "semicolon-separated" in text
    assert_problem(text, path, 1, "study_id", "required column is missing")


def test_duplicated_column_name(tmp_path, capsys):
    header = HEADER.replace("source", "Years")
    path = write(tmp_path, ROWS, header=header)
    code, text = run_validate(path, capsys)
    assert code == 2
    assert_problem(text, path, 1, "Years", r"duplicated column \(also 'years'\)")


def test_user_line_column_is_kept_apart(tmp_path):
    header = HEADER.replace("source", "line")
    df = load_observations(write(tmp_path, ROWS, header=header))
    assert df["line"].tolist() == [2, 3, 4, 5, 6]
    assert df["input_line"].tolist() == ["paper 1"] * 4 + ["paper 2"]


def test_bom_and_crlf(tmp_path):
    path = tmp_path / "win.csv"
    path.write_bytes(("\r\n".join([HEADER, *ROWS]) + "\r\n").encode("utf-8-sig"))
    df = load_observations(path)
    assert df.columns[0] == "obs_id" and len(df) == 5
    assert df["source"].iloc[-1] == "paper 2"


def test_parquet_float_ids_read_as_integers(tmp_path):
    df = pd.read_csv(write(tmp_path, ROWS))
    df["study_id"] = [1.0, 1.0, 1.0, 1.0, 2.0]
    df["plot_id"] = [3.0, 3.0, 3.0, 3.0, np.nan]
    path = tmp_path / "obs.parquet"
    df.to_parquet(path, index=False)
    loaded = load_observations(path)
    assert loaded["study_id"].tolist() == ["1", "1", "1", "1", "2"]
    assert loaded["plot_id"].tolist() == ["3", "3", "3", "3", "p1"]


# --- input help: did you mean, encodings, units ---------------------------------------------------

HELP_HEADER = (
    "study_id,site_id,lon,lat,{map},mat_c,vegetation,origin,years,depth_top_cm,"
    "depth_bottom_cm,{soc},note"
)
HELP_ROWS = [
    "S,A,108,36,500,9,forest,natural,0,0,{b1},{c1},黄土高原",
    "S,A,108,36,500,9,forest,natural,5,{b1},{b2},{c2},刺槐林",
    "S,A,108,36,500,9,forest,natural,5,0,{b1},{c3},安塞",
]


def _help_table(map_name="map_mm", soc_name="soc_g_kg", metres=False, percent=False) -> str:
    b1, b2 = (0.2, 1.0) if metres else (20, 100)
    c = (0.8, 0.5, 0.6) if percent else (8.0, 5.0, 6.0)
    head = HELP_HEADER.format(map=map_name, soc=soc_name)
    rows = [r.format(b1=b1, b2=b2, c1=c[0], c2=c[1], c3=c[2]) for r in HELP_ROWS]
    return "\n".join([head, *rows]) + "\n"


def test_did_you_mean_for_a_near_miss_required_column(tmp_path, capsys):
    path = tmp_path / "obs.csv"
    path.write_text(_help_table(map_name="MAP", soc_name="SOC"), encoding="utf-8")
    assert main(["validate", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert "column map_mm: required column is missing; did you mean 'MAP'?" in err
    assert "'SOC' is not a contract column" in err and "did you mean 'soc_g_kg'" in err


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("MAP", "map_mm"),
        ("Precipitation", "map_mm"),
        ("MAT", "mat_c"),
        ("SOC", "soc_g_kg"),
        ("soc_g_kgs", "soc_g_kg"),
        ("Bulk density", "bd_g_cm3"),
        ("depth_top", "depth_top_cm"),
        ("Latitude", "lat"),
        ("stand.age", "years"),
        ("colour", None),
    ],
)
def test_suggest_column(name, expected):
    from bayes_soil.validate import KNOWN_COLUMNS, suggest_column

    assert suggest_column(name, KNOWN_COLUMNS) == expected


def test_gb18030_text_is_detected_and_announced(tmp_path, capsys):
    path = tmp_path / "obs.csv"
    path.write_bytes(_help_table().encode("gb18030"))
    assert main(["validate", "--data", str(path)]) == 0
    out = capsys.readouterr().out
    assert "not UTF-8; read as gb18030" in out
    df = load_observations(path)
    assert df["note"].tolist() == ["黄土高原", "刺槐林", "安塞"]  # not latin-1 mojibake


def test_utf8_text_has_no_encoding_note(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text(_help_table(), encoding="utf-8")
    notes: list[str] = []
    load_observations(path, notes=notes)
    assert notes == []


def test_metres_and_percent_are_warned_not_refused(tmp_path, capsys):
    path = tmp_path / "obs.csv"
    path.write_text(_help_table(metres=True, percent=True), encoding="utf-8")
    assert main(["validate", "--data", str(path)]) == 0
    out = capsys.readouterr().out
    assert "depths look like metres" in out and "soc_g_kg looks like percent" in out
    path.write_text(_help_table(), encoding="utf-8")
    assert main(["validate", "--data", str(path)]) == 0
    out = capsys.readouterr().out
    assert "look like metres" not in out and "looks like percent" not in out
