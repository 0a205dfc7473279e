"""Fast tier: the documented contracts of issue 13 (spec overrides, unknown keys, one source of
defaults, declared dependencies, .xls, one data identity, one atomic writer, JSON attributes)."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from bayes_soil import fits, io
from bayes_soil.cli import build_parser, main
from bayes_soil.commands.fit import _spec_overrides
from bayes_soil.defaults import DEFAULT_SEED
from bayes_soil.errors import InputError
from bayes_soil.harmonize import harmonize, load_harmonized, write_harmonized
from bayes_soil.models import REGISTRY, get_model
from bayes_soil.models.base import FitSettings, check_spec_keys
from bayes_soil.simulate import simulate, write_simulation
from bayes_soil.validate import load_observations

REPO = Path(__file__).resolve().parents[1]


def _fit_args(*argv: str):
    return build_parser().parse_args(["fit", *argv])


# ---- fit --spec: flags override the file only when given ------------------------------------
def test_spec_file_entries_survive_when_flags_are_not_given(tmp_path):
    spec = tmp_path / "my.toml"
    spec.write_text('[data]\nelements = ["N"]\ndrivers = ["mat_c"]\n[priors]\nchange_sd = 0.3\n')
    out = _spec_overrides(_fit_args("--model", "climate_breakpoints", "--spec", str(spec)))
    assert out["data"] == {"elements": ["N"], "drivers": ["mat_c"]}
    assert out["priors"] == {"change_sd": 0.3}
    m = get_model("climate_breakpoints", out)
    assert m.spec["data"]["elements"] == ["N"] and m.spec["data"]["drivers"] == ["mat_c"]
    # a flag that is given wins over the file
    out = _spec_overrides(
        _fit_args("--model", "climate_breakpoints", "--spec", str(spec), "--element", "both")
    )
    assert out["data"] == {"elements": ["C", "N"], "drivers": ["mat_c"]}
    out = _spec_overrides(
        _fit_args("--model", "climate_breakpoints", "--spec", str(spec), "--driver", "map_mm")
    )
    assert out["data"] == {"elements": ["N"], "drivers": ["map_mm"]}
    # no file, no flags: nothing overridden (the TOML defaults stand)
    assert _spec_overrides(_fit_args("--model", "hier_rates")) == {}


def test_climate_only_flags_are_refused_for_hier_rates():
    with pytest.raises(InputError, match="--driver applies to climate_breakpoints only"):
        _spec_overrides(_fit_args("--model", "hier_rates", "--driver", "map_mm"))
    with pytest.raises(InputError, match="--no-break"):
        _spec_overrides(_fit_args("--model", "hier_rates", "--no-break"))


# ---- unknown spec keys are errors -------------------------------------------------------------
@pytest.mark.parametrize(
    "text, key, valid",
    [
        ("[sampler]\ntarget_accpt = 0.95\n", "sampler.target_accpt", "target_accept"),
        ("[strcture]\norigin = 'contrast'\n", "strcture", "structure"),
        ("[priors]\ntau_beta = 0.3\n", "priors.tau_beta", "sd_unit_slope"),
        ("elements = ['C']\n", "elements", "data"),
    ],
)
def test_unknown_spec_key_in_a_file_exits_2_naming_key_and_valid_names(
    tmp_path, capsys, text, key, valid
):
    spec = tmp_path / "typo.toml"
    spec.write_text(text)
    assert main(["fit", "--model", "hier_rates", "--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    assert str(spec) in err and repr(key) in err and valid in err


def test_unknown_spec_keys_are_refused_in_the_python_api_too():
    with pytest.raises(InputError, match=r"'sampler.chain'.*chains"):
        get_model("hier_rates", {"sampler": {"chain": 2}})
    with pytest.raises(InputError, match=r"'data.element'.*elements"):
        get_model("climate_breakpoints", {"data": {"element": ["C"]}})
    with pytest.raises(InputError, match="must be a table"):
        get_model("hier_rates", {"priors": 1.0})
    with pytest.raises(InputError, match=r"unknown sampler setting\(s\) chain"):
        get_model("hier_rates").settings(chain=2)
    # every [sampler] key FitSettings knows is allowed, and entries keyed by data values too
    m = get_model("hier_rates", {"sampler": {"seed": 5, "cores": 1, "adaptation": "low_rank"}})
    assert m.settings().seed == 5 and m.settings().adaptation == "low_rank"
    defaults = {"priors": {"sd": 1.0, "sd_by_driver": {"mat_c": 0.05}}}
    check_spec_keys({"priors": {"sd_by_driver": {"map_mm": 0.1}}}, defaults, "x")
    with pytest.raises(InputError, match=r"'priors\.sd_by_driver' must be a table"):
        check_spec_keys({"priors": {"sd_by_driver": 0.1}}, defaults, "x")
    # the model's own full spec (as reference models built from it pass it) is valid
    full = get_model("climate_breakpoints").spec
    assert get_model("climate_breakpoints", full).spec == full


# ---- one source of defaults -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_sampler_defaults_come_from_the_toml_spec(name):
    with open(REGISTRY[name].spec_path(), "rb") as f:
        toml = tomllib.load(f)["sampler"]
    fs = get_model(name).settings()
    assert fs.sampler == toml["name"]
    for key, value in toml.items():
        if key != "name":
            assert getattr(fs, key) == value, key
    assert fs.seed == DEFAULT_SEED and fs.cores is None
    # arguments override; None leaves the spec's value
    assert get_model(name).settings(draws=7, tune=None).draws == 7


def test_fit_settings_hold_no_model_defaults_of_their_own():
    with pytest.raises(TypeError):
        FitSettings()  # type: ignore[call-arg]
    fields = FitSettings.__dataclass_fields__.items()
    with_defaults = {k for k, f in fields if f.default is not dataclasses.MISSING}
    assert with_defaults == {"seed", "cores", "adaptation"}  # not model defaults


def test_one_default_seed_everywhere(capsys):
    from bayes_soil import simulate as sim_module

    assert sim_module.DEFAULT_SEED is DEFAULT_SEED
    assert FitSettings.__dataclass_fields__["seed"].default == DEFAULT_SEED
    assert _fit_args("--model", "hier_rates").seed is None  # None: the spec's, else the constant
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert f"else {DEFAULT_SEED}" in " ".join(capsys.readouterr().out.split())
    pattern = re.compile(rf"\b{DEFAULT_SEED}\b")
    offenders = [
        str(p.relative_to(REPO))
        for p in [*(REPO / "bayes_soil").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]
        if p.name != "defaults.py" and pattern.search(p.read_text())
    ]
    assert offenders == []


# ---- declared dependencies --------------------------------------------------------------------
def _requirements(extras: bool = False) -> dict[str, Requirement]:
    """Declared requirements by normalised name: the dependencies (and the extras' too)."""
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    deps = list(project["dependencies"])
    if extras:
        deps += [d for group in project.get("optional-dependencies", {}).values() for d in group]
    reqs = [Requirement(d) for d in deps]
    return {re.sub(r"[-_.]+", "-", r.name).lower(): r for r in reqs}


def _package_files() -> list[Path]:
    """The package's committed modules (all of them when git is not there)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "bayes_soil"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return list((REPO / "bayes_soil").rglob("*.py"))
    return [REPO / f for f in out if f.endswith(".py") and (REPO / f).is_file()]


def _third_party_imports() -> set[str]:
    names = set()
    for p in _package_files():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "bayes_soil"}


def test_every_imported_library_is_declared_with_bounds_that_hold():
    reqs = _requirements()
    declared = set(_requirements(extras=True))  # optional features declare theirs in extras
    for req in _requirements(extras=True).values():  # "dask[distributed]" declares distributed
        for extra in req.extras:
            for dep in map(Requirement, metadata.requires(req.name) or []):
                if dep.marker is not None and dep.marker.evaluate({"extra": extra}):
                    declared.add(re.sub(r"[-_.]+", "-", dep.name).lower())
    dists = metadata.packages_distributions()
    missing = []
    for mod in sorted(_third_party_imports()):
        names = {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(mod, [mod])}
        if not names & declared:
            missing.append(mod)
    assert missing == [], f"imported but not declared in pyproject.toml: {missing}"
    for mod in ("pytensor", "arviz_base", "arviz_stats", "arviz_plots", "sklearn"):
        names = {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(mod, [mod])}
        assert names & set(reqs), f"{mod} is imported by the core: a dependency, not an extra"
    # GroupKFold(shuffle=, random_state=) is new in scikit-learn 1.6
    assert Version("1.5.99") not in reqs["scikit-learn"].specifier
    assert Version("1.6") in reqs["scikit-learn"].specifier
    # nutpie changes its API between minor versions: an upper bound
    assert Version("99") not in reqs["nutpie"].specifier
    for name in ("pytensor", "arviz-base", "arviz-stats", "arviz-plots", "nutpie"):
        assert Version(metadata.version(name)) in reqs[name].specifier, name


# ---- .xls ---------------------------------------------------------------------------------------
def test_xls_is_refused_with_a_clear_message(tmp_path, capsys):
    path = tmp_path / "obs.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0 old excel")
    with pytest.raises(InputError, match=r"obs\.xls.*save it as \.xlsx or \.csv"):
        io.read_table(path)
    assert main(["validate", "--data", str(path)]) == 2
    assert "save it as .xlsx or .csv" in capsys.readouterr().err


# ---- one data identity --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sim")
    write_simulation(simulate(seed=11, scale=0.1), d)
    return d / "observations.csv"


def test_one_data_identity_for_the_python_api_the_cli_and_the_report(small_csv, tmp_path):
    # the Python API: harmonize a frame, fit either table (or the whole result)
    api = harmonize(load_observations(small_csv))
    expected = io.data_identity(api.layers, api.changes)
    assert api.data_sha256 == expected
    routes = {}
    for name in ("hier_rates", "climate_breakpoints"):
        model = get_model(name)
        routes[f"{name}: table"] = model.resolve_data(getattr(api, model.table))[1]
        routes[f"{name}: result"] = model.resolve_data(api)[1]
    # the CLI / report: load_harmonized on the file, and on the folder 'harmonize' wrote
    routes["fit --data FILE"] = load_harmonized(small_csv).data_sha256
    out = tmp_path / "harm"
    assert main(["harmonize", "--data", str(small_csv), "--out", str(out)]) == 0
    routes["fit --data FOLDER"] = load_harmonized(out).data_sha256
    routes["harmonize_report.json"] = json.loads((out / "harmonize_report.json").read_text())[
        "data_sha256"
    ]
    assert routes == dict.fromkeys(routes, expected)
    # a changed table is not taken for the harmonized data it came from
    model = get_model("hier_rates")
    c_only = api.layers[api.layers["element"] == "C"]
    assert model.resolve_data(c_only)[1] != expected
    assert model.resolve_data(c_only)[1] == io.data_identity(c_only, None)
    edited = api.layers.copy()
    edited.loc[0, "stock_mg_ha"] += 1.0
    assert model.resolve_data(edited)[1] != expected
    # a bare frame without the stamp is identified as itself
    plain = api.layers.copy()
    plain.attrs = {}
    assert model.resolve_data(plain)[1] == io.data_identity(plain, None)


def test_identity_survives_writing_and_reading_the_tables(small_csv, tmp_path):
    res = load_harmonized(small_csv)
    write_harmonized(res, tmp_path)
    back = load_harmonized(tmp_path)
    assert io.table_digest(back.layers) == io.table_digest(res.layers)
    assert io.table_digest(back.changes) == io.table_digest(res.changes)
    assert back.data_sha256 == res.data_sha256
    # another dataset has another identity (load_fit(expected_sha256=...) tells them apart)
    other = harmonize(load_observations(small_csv).iloc[:-40])
    assert other.data_sha256 != res.data_sha256


def test_identity_is_the_same_in_every_process(small_csv):
    """The harmonized tables are the same to the last bit in every run (the forest predicts
    with one thread), so their hash names the data in any later process."""
    code = (
        "import sys\n"
        "from bayes_soil.harmonize import bulk_density, load_harmonized\n"
        "bulk_density.PARALLEL_ROWS = 0  # two threads even on this small table\n"
        "print(load_harmonized(sys.argv[1]).data_sha256)\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code, str(small_csv)],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        ).stdout.strip()
        for _ in range(3)
    ]
    assert len(runs[0]) == 64 and runs == [runs[0]] * 3


def test_forest_predicts_in_tree_order_with_one_thread():
    from bayes_soil.harmonize.bulk_density import forest_predict, make_forest

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    y = x["a"].to_numpy() + rng.normal(size=300)
    forest = make_forest(seed=1, n_rows=10_000).fit(x, y)
    assert forest.n_jobs == 2  # fitted in parallel
    in_order = sum(t.predict(x.to_numpy()) for t in forest.estimators_) / len(forest.estimators_)
    assert np.array_equal(forest_predict(forest, x), in_order)


def test_synthetic_flag_is_io_is_synthetic_on_every_route():
    frame = pd.DataFrame({"source": ["  SYNTHETIC: sim", "synthetic: sim"], "layer": ["a", "b"]})
    assert io.is_synthetic(frame)
    assert get_model("hier_rates").resolve_data(frame)[2] is True


# ---- one atomic writer, one JSON-attribute reader ---------------------------------------------
def test_atomic_outputs_of_a_dead_writer_are_cleaned(tmp_path):
    code = (
        "import os, sys\n"
        "from bayes_soil.io import AtomicOutputs\n"
        "out = AtomicOutputs(sys.argv[1]).__enter__()\n"
        "open(out.path('table.csv'), 'w').write('half')\n"
        "os._exit(0)\n"  # dies without publishing or cleaning up
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    left = list(tmp_path.glob(".table.csv.*.partial"))
    assert len(left) == 1
    with io.AtomicOutputs(tmp_path) as out:
        keep = out.path("mine.csv")  # this process is alive: its partial stays
        assert io.clean_partials(tmp_path) == left
        assert keep.exists()
    assert not left[0].exists() and (tmp_path / "mine.csv").exists()
    assert not list(tmp_path.glob(".*.partial"))


def test_json_attr_reads_decodes_and_names_a_bad_attribute():
    attrs = {"diagnostics": json.dumps({"verdict": "pass"}), "empty": "", "bad": "{not json"}
    assert fits.json_attr(attrs, "diagnostics") == {"verdict": "pass"}
    assert fits.diagnostics_of(attrs) == {"verdict": "pass"}
    assert fits.json_attr(attrs, "missing", {}) == {}
    assert fits.json_attr(attrs, "empty", []) == []
    with pytest.raises(InputError, match="'bad' is not valid JSON"):
        fits.json_attr(attrs, "bad")
