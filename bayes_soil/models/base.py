"""The SoilModel base class, the model registry and the one code path that fits every model.

A model declares its defaults in ``bayes_soil/models/<name>.toml`` (installed with the
package), turns a harmonized table into arrays (``prepare``), builds a PyMC model from them
(``build``), and adds its derived quantities to the posterior (``derived``). ``fit`` samples,
adds log-likelihood and posterior predictive draws, checks the diagnostics and stamps the
provenance attributes; nothing is sampled in ``__init__``.

The TOML spec is the one source of defaults, sampler settings included (its ``[sampler]``
table): a user's spec may change any entry but may not add one (:meth:`SoilModel.check_spec`
rejects unknown keys, naming the valid ones).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import tomllib
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from bayes_soil import fits
from bayes_soil.defaults import DEFAULT_SEED
from bayes_soil.errors import InputError
from bayes_soil.fits import load_fit, save_fit
from bayes_soil.io import FIXED_TWIN_ATTR, identity_of_table, is_synthetic, stock_method_of
from bayes_soil.models.nutpie_compile import use_fast_callbacks

if TYPE_CHECKING:
    import pymc as pm
    import xarray as xr


class HarmonizedLike(Protocol):
    """A harmonized result (``bayes_soil.harmonize.HarmonizeResult``): both tables, one id."""

    layers: pd.DataFrame
    changes: pd.DataFrame
    synthetic: bool
    data_sha256: str


MODELS_DIR = Path(__file__).parent
SAMPLERS = ("nutpie", "pymc", "numpyro")
REGISTRY: dict[str, type[SoilModel]] = {}
CELL_DIMS = {"unit_cell", "site_cell", "study_cell"}


def register(cls: type[SoilModel]) -> type[SoilModel]:
    """Class decorator: make a model available by its ``name`` (CLI ``--model`` choices)."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    REGISTRY[cls.name] = cls
    return cls


def get_model(name: str, spec: dict | None = None) -> SoilModel:
    """Instantiate the registered model ``name`` with ``spec`` merged over its defaults."""
    if name not in REGISTRY:
        raise InputError(f"unknown model {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](spec)


def deep_merge(base: dict, override: dict) -> dict:
    """Recursively merge ``override`` into a copy of ``base`` (lists are replaced, not merged)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class ModelData:
    """What a model is built from: coordinates, arrays and the constants needed to report.

    ``arrays`` hold the observed response and the covariates/indices (named as in the PyMC
    model); ``meta`` holds standardisation constants and anything ``derived`` needs.
    """

    coords: dict[str, list]
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    n_obs: int = 0


@dataclass
class FitSettings:
    """Sampler settings (stored as JSON in the fit's ``sampler`` attribute).

    Build them with :meth:`SoilModel.settings`: every field without a default here comes from
    the model spec's ``[sampler]`` table (where the defaults live; ``name`` there is ``sampler``
    here), so this class holds no model defaults of its own; ``seed`` defaults to the package's
    one DEFAULT_SEED, ``cores`` to the CPUs this process may use (:func:`chain_cores`) and
    ``adaptation`` to the sampler's own choice.
    """

    sampler: str
    chains: int
    draws: int
    tune: int
    target_accept: float
    pointwise_draws_per_chain: int
    seed: int = DEFAULT_SEED
    cores: int | None = None  # parallel chains; None = chain_cores(chains)
    # nutpie's mass-matrix adaptation ("diag" or "low_rank"); "diag" is nutpie's own default
    # (what a spec without the entry gets), not a model default
    adaptation: str = "diag"

    @classmethod
    def spec_keys(cls) -> list[str]:
        """The keys a spec's ``[sampler]`` table may hold (``name`` for the sampler)."""
        return ["name" if f == "sampler" else f for f in cls.__dataclass_fields__]

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def check_spec_keys(spec: dict, defaults: dict, source: str, path: tuple[str, ...] = ()) -> None:
    """Raise InputError for a key of ``spec`` that ``defaults`` lacks (at any table depth).

    A table in the defaults must stay a table. The values of entries are not checked here: an
    entry whose value is an inline table keyed by data values (e.g. ``change_sd_beside_other =
    { mat_c = 0.05 }``, keyed by driver) is free-form and left to the model.
    """
    if not isinstance(spec, dict):
        where = f"[{'.'.join(path)}]" if path else "the spec"
        raise InputError(f"{source}: {where} must be a table, got {spec!r}")
    for key, value in spec.items():
        where = ".".join((*path, key))
        if key not in defaults:
            valid = sorted(defaults)
            table = f"[{'.'.join(path)}]" if path else "the top level"
            raise InputError(
                f"{source}: unknown spec key {where!r}; valid names in {table}: {', '.join(valid)}"
            )
        default = defaults[key]
        if isinstance(default, dict) and not path:
            check_spec_keys(value, default, source, (*path, key))
        elif isinstance(default, dict) and not isinstance(value, dict):
            raise InputError(f"{source}: spec key {where!r} must be a table, got {value!r}")


class SoilModel:
    """Base class: spec handling, sampling, post-processing and provenance for every model."""

    name: ClassVar[str] = ""
    table: ClassVar[str] = "layers"  # which harmonized table the model reads
    observed: ClassVar[tuple[str, ...]] = ()  # names of the observed variables
    diagnostic_vars: ClassVar[tuple[str, ...]] = ()  # what the gate judges (default: all)
    # sampled but not reported (listed; they fail a fit only when chains disagree outright)
    nuisance_vars: ClassVar[tuple[str, ...]] = ()
    # pure reparameterisations of stored variables (a non-centred z, a signed sd): not
    # measured, since their R-hat / ESS repeat those of the variables they make
    unmeasured_vars: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: dict | None = None):
        self.check_spec(spec or {})
        self.spec = deep_merge(self.default_spec(), spec or {})

    # ---- spec -------------------------------------------------------------------------
    @classmethod
    def spec_path(cls) -> Path:
        """The declarative spec file shipped beside the code."""
        return MODELS_DIR / f"{cls.name}.toml"

    @classmethod
    def default_spec(cls) -> dict:
        with open(cls.spec_path(), "rb") as f:
            return tomllib.load(f)

    @classmethod
    def check_spec(cls, spec: dict, source: str | None = None) -> None:
        """Reject keys of a user's spec that the model's default spec does not have.

        Every table is checked against the TOML beside the model; ``[sampler]`` may also hold
        any :class:`FitSettings` field (e.g. ``seed``). ``source`` names the spec in messages
        (default: the model).
        """
        defaults = cls.default_spec()
        defaults["sampler"] = {
            **{k: None for k in FitSettings.spec_keys()},
            **defaults.get("sampler", {}),
        }
        check_spec_keys(spec, defaults, source or f"model {cls.name}")

    @classmethod
    def description(cls) -> str:
        return str(cls.default_spec().get("description", ""))

    def spec_json(self) -> str:
        return json.dumps(self.spec, sort_keys=True)

    # ---- to implement -----------------------------------------------------------------
    def prepare(self, table: pd.DataFrame) -> ModelData:  # pragma: no cover - abstract
        raise NotImplementedError

    def build(self, data: ModelData) -> pm.Model:  # pragma: no cover - abstract
        raise NotImplementedError

    def derived(self, posterior: xr.Dataset, data: ModelData) -> xr.Dataset:  # pragma: no cover
        """Return a Dataset of derived quantities (original units) to merge into the posterior."""
        raise NotImplementedError

    def pointwise(self, dt: xr.DataTree, model: pm.Model, data: ModelData, fs: FitSettings):
        """Add ``log_likelihood``, ``posterior_predictive`` (and ``observed_data``) to ``dt``.

        The default asks PyMC (observed variables); a model whose likelihood is a Potential
        (effects integrated out) overrides this with its own draws.
        """
        add_pointwise(dt, model, self.observed, fs)

    def extra_attrs(self, dt: xr.DataTree, data: ModelData, settings: FitSettings) -> dict:
        """Model-specific root attributes (e.g. a LOO comparison); strings and numbers only."""
        return {}

    # ---- the one fitting path ----------------------------------------------------------
    def settings(self, **overrides: Any) -> FitSettings:
        """Sampler settings: the spec's [sampler] table, overridden by non-None arguments."""
        known = FitSettings.__dataclass_fields__
        unknown = sorted(k for k in overrides if k not in known)
        if unknown:
            raise InputError(
                f"unknown sampler setting(s) {', '.join(unknown)}; valid: {', '.join(known)}"
            )
        s = dict(self.spec.get("sampler", {}))
        if "name" in s:
            s["sampler"] = s.pop("name")
        s.update({k: v for k, v in overrides.items() if v is not None})
        missing = [k for k, f in known.items() if k not in s and f.default is MISSING]
        if missing:
            raise InputError(
                f"model {self.name}: the spec's [sampler] table lacks {', '.join(missing)} "
                f"(add them to {self.spec_path().name})"
            )
        unknown = sorted(k for k in s if k not in known)
        if unknown:
            raise InputError(f"model {self.name}: unknown [sampler] key(s) {', '.join(unknown)}")
        return FitSettings(**s)

    def fit(
        self,
        table: pd.DataFrame | HarmonizedLike,
        *,
        data_sha256: str | None = None,
        synthetic: bool | None = None,
        progressbar: bool = True,
        **settings: Any,
    ) -> xr.DataTree:
        """Sample the model on ``table`` and return the full DataTree with provenance attrs.

        ``table`` is the model's harmonized table, or the whole harmonized result
        (``load_harmonized(...)``: the model takes its own table). The fit's ``data_sha256``
        is :func:`bayes_soil.io.data_identity` of the harmonized data, as the CLI, the report
        and ``load_fit(expected_sha256=...)`` compute it; a table changed after harmonizing
        (e.g. filtered) is identified as itself. ``settings`` are FitSettings fields (sampler,
        chains, draws, tune, seed, cores, ...); missing ones come from the spec's [sampler] table.
        """
        fs = self.settings(**settings)
        table, data_sha256, synthetic = self.resolve_data(table, data_sha256, synthetic)
        data = self.prepare(table)
        model = self.build(data)
        dt = sample_model(model, fs, progressbar=progressbar)
        return self.finish(dt, model, data, fs, table, data_sha256, synthetic)

    def resolve_data(
        self,
        data: pd.DataFrame | HarmonizedLike,
        data_sha256: str | None = None,
        synthetic: bool | None = None,
    ) -> tuple[pd.DataFrame, str, bool]:
        """The table this model reads, the data identity and the synthetic flag of ``data``.

        ``data``: the model's table or a harmonized result. Explicit arguments win; otherwise
        the identity is the harmonized data's (:func:`bayes_soil.io.identity_of_table`).
        """
        if isinstance(data, pd.DataFrame):
            table = data
            sha = data_sha256 or identity_of_table(table, self.table)
            syn = is_synthetic(table) if synthetic is None else bool(synthetic)
            return table, sha, syn
        if not hasattr(data, self.table):
            raise InputError(
                f"model {self.name} needs the harmonized {self.table!r} table (a DataFrame or "
                f"a harmonized result), got {type(data).__name__}"
            )
        table = getattr(data, self.table)
        sha = data_sha256 or getattr(data, "data_sha256", None) or ""
        if not sha:
            sha = identity_of_table(table, self.table)
        syn = bool(getattr(data, "synthetic", is_synthetic(table)))
        return table, sha, syn if synthetic is None else bool(synthetic)

    def finish(
        self,
        dt: xr.DataTree,
        model: pm.Model,
        data: ModelData,
        fs: FitSettings,
        table: pd.DataFrame,
        data_sha256: str | None,
        synthetic: bool | None,
    ) -> xr.DataTree:
        """Add pointwise groups, derived quantities, diagnostics and attributes to a raw fit."""
        self.pointwise(dt, model, data, fs)
        # the gate judges what the report shows (pointwise may add it: psi, k1, k2 of the
        # turning-point model) and lists the nuisance parameters; derived quantities below
        # are functions of the judged ones (judged by default: every variable before them)
        post = dt["posterior"].to_dataset()
        judged = list(self.diagnostic_vars or post.data_vars)
        derived = self.derived(post, data)
        post = post.assign(derived.data_vars).assign_attrs(post.attrs)
        # per-cell R-hat / ESS of every variable, once: stored for the report's table
        cells = fits.cell_diagnostics(post.drop_vars(self.unmeasured_vars, errors="ignore"))
        dt["diagnostics"] = cells
        diag = fits.check_diagnostics(
            dt, var_names=judged, nuisance=self.nuisance_vars, cells=cells
        )
        # per-cell nuisance effects (thousands of them) are kept in single precision: they
        # would otherwise dominate the file; the quantities of interest stay float64
        for v in post.data_vars:
            if set(post[v].dims) & CELL_DIMS and post[v].dtype == np.float64:
                post[v] = post[v].astype(np.float32)
        dt["posterior"] = post
        attrs = fits.provenance_attrs(
            model=self.name,
            spec_json=self.spec_json(),
            settings=fs,
            data_sha256=data_sha256 or identity_of_table(table, self.table),
            synthetic=is_synthetic(table) if synthetic is None else bool(synthetic),
            diagnostics=diag,
        )
        attrs.update(self.extra_attrs(dt, data, fs))
        attrs["n_obs"] = int(data.n_obs)
        # fixed-depth or equivalent-soil-mass stocks (harmonize --stocks), read off the table
        attrs["stock_method"] = stock_method_of(table)
        if attrs["stock_method"] == "esm" and table.attrs.get(FIXED_TWIN_ATTR):
            attrs["fixed_data_sha256"] = str(table.attrs[FIXED_TWIN_ATTR])
        dt.attrs.update(attrs)
        return dt

    # ---- persistence -------------------------------------------------------------------
    def save(self, dt: xr.DataTree, path: str | Path) -> Path:
        return save_fit(dt, path)

    @classmethod
    def load(cls, path: str | Path, expected_sha256: str | None = None) -> xr.DataTree:
        """Load a fit, checking it was made by this model (and from the given data)."""
        dt = load_fit(path, expected_sha256=expected_sha256)
        if dt.attrs.get("model") != cls.name:
            raise InputError(
                f"{path}: this fit was made by model {dt.attrs.get('model')!r}, not {cls.name!r}"
            )
        return dt


# ---- helpers shared by the models ----------------------------------------------------------
def check_sampler(name: str) -> None:
    """Fail early and clearly for an unknown or uninstalled sampler."""
    if name not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if name == "numpyro":
        missing = [m for m in ("numpyro", "jax") if importlib.util.find_spec(m) is None]
        if missing:
            raise InputError(
                f"--sampler numpyro needs {' and '.join(missing)}, which are not installed: "
                "pip install 'bayes_soil[numpyro]' (or use --sampler nutpie, the default)"
            )


def chain_cores(chains: int) -> int:
    """Chains to run at once: every CPU this process may use, at most one per chain.

    PyMC's own default assumes half the CPUs are hyper-threads and so ran the 4 chains on one
    thread of a 2-core machine: the demo's hier_rates C sampled in 28.7-29.1 s instead of
    11.5 s (same compiled model, same process, load ~1.1; ``benchmarks/results.md``).
    """
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(chains, cpus))


def sample_model(model: pm.Model, fs: FitSettings, progressbar: bool = True) -> xr.DataTree:
    """Run NUTS with the sampler named explicitly (PyMC 6 would silently prefer nutpie)."""
    import pymc as pm

    check_sampler(fs.sampler)
    if fs.sampler == "nutpie":
        use_fast_callbacks()
    nuts: dict[str, Any] = {"target_accept": fs.target_accept}
    if fs.sampler == "nutpie" and fs.adaptation != "diag":
        nuts["adaptation"] = fs.adaptation
    with model:
        dt = pm.sample(
            draws=fs.draws,
            tune=fs.tune,
            chains=fs.chains,
            cores=fs.cores if fs.cores is not None else chain_cores(fs.chains),
            random_seed=fs.seed,
            nuts_sampler=fs.sampler,
            nuts=nuts,
            progressbar=progressbar,
            quiet=not progressbar,
            compute_convergence_checks=False,
        )
    return dt


def thin_posterior(post: xr.Dataset, per_chain: int) -> xr.Dataset:
    """Evenly spaced draws (``per_chain`` of them) for the pointwise groups."""
    n = post.sizes["draw"]
    if per_chain <= 0 or per_chain >= n:
        return post
    idx = np.unique(np.linspace(0, n - 1, per_chain).round().astype(int))
    return post.isel(draw=idx)


def add_pointwise(dt: xr.DataTree, model: pm.Model, observed: tuple[str, ...], fs: FitSettings):
    """Add log_likelihood and posterior_predictive (on thinned draws, float32) to ``dt``.

    Pointwise groups are n_obs x draws; on the full draws they would dominate the file (hundreds
    of MB), so they use ``fs.pointwise_draws_per_chain`` evenly spaced draws per chain, enough for
    PSIS-LOO and predictive checks. The draw coordinate keeps the original draw numbers.
    """
    import pymc as pm
    import xarray as xr

    post = dt["posterior"].to_dataset()
    thin = xr.DataTree(dataset=thin_posterior(post, fs.pointwise_draws_per_chain))
    thin_dt = xr.DataTree.from_dict({"posterior": thin.to_dataset()})
    ll = pm.compute_log_likelihood(
        thin_dt,
        model=model,
        var_names=list(observed),
        extend_inferencedata=False,
        progressbar=False,
    )
    if isinstance(ll, xr.DataTree):
        ll = ll["log_likelihood"].to_dataset()
    ll_ds = ll
    dt["log_likelihood"] = ll_ds.astype("float32").assign_attrs(
        thinned_from_draws=int(post.sizes["draw"])
    )
    with model:
        pp = pm.sample_posterior_predictive(
            thin_dt, var_names=list(observed), random_seed=fs.seed + 1, progressbar=False
        )
    pp_ds = pp["posterior_predictive"].to_dataset()
    dt["posterior_predictive"] = pp_ds.astype("float32").assign_attrs(
        thinned_from_draws=int(post.sizes["draw"])
    )


def observation_ids(df: pd.DataFrame) -> pd.Series:
    """Unique row labels for the ``obs_id`` dimension: profile | element | layer (row numbers
    appended where those repeat, e.g. plots without a profile id)."""
    obs_id = (
        df["profile_id"].astype(str) + "|" + df["element"] + "|" + df["layer"]
        if "profile_id" in df.columns
        else pd.Series([f"row{i}" for i in range(len(df))])
    )
    if obs_id.duplicated().any():
        obs_id = obs_id + "|" + pd.Series(np.arange(len(df)).astype(str))
    return obs_id


DEEP_IMPUTED_MODES = ("missing", "as_data")


def drop_deep_imputed(df: pd.DataFrame, mode: str) -> tuple[pd.DataFrame, int]:
    """Leave out rows whose stock (or change) rests on the shallow-to-deep fill.

    Imputed values are not data: with ``mode = "missing"`` (every model's default) such a row
    is a missing cell; ``"as_data"`` keeps it as if measured (the paper's practice, which the
    frequentist reproduction follows). Returns the kept rows and how many were left out.
    """
    if mode not in DEEP_IMPUTED_MODES:
        raise InputError(
            f"data.deep_imputed must be one of {', '.join(DEEP_IMPUTED_MODES)}, not {mode!r}"
        )
    if mode == "as_data" or "deep_imputed" not in df.columns:
        return df, 0
    imputed = df["deep_imputed"].astype(str).str.lower().isin(("true", "1"))
    return df[~imputed], int(imputed.sum())


#: "uncertain": values resting on an estimated bulk density carry its predictive variance
#: (harmonize's sd columns); "as_data": they are fitted as if measured
BD_ESTIMATED_MODES = ("uncertain", "as_data")


def bd_estimated_mode(data_spec: dict) -> str:
    """The spec's ``data.bd_estimated``, checked (the same rule for every model)."""
    mode = data_spec["bd_estimated"]
    if mode not in BD_ESTIMATED_MODES:
        raise InputError(
            f"data.bd_estimated must be one of {', '.join(BD_ESTIMATED_MODES)}, not {mode!r}"
        )
    return mode


def index_of(values: pd.Series | np.ndarray, labels: list) -> np.ndarray:
    """Integer codes of ``values`` in ``labels`` (every value must be present)."""
    lookup = {lab: i for i, lab in enumerate(labels)}
    return np.asarray([lookup[v] for v in values], dtype=np.int64)


# ---- steps of the models' prepare ------------------------------------------------------------
def coerce_numeric(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """``df`` with ``columns`` as numbers, changed in place (text that is no number -> NaN)."""
    for c in columns:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def elements_present(df: pd.DataFrame, wanted: Iterable[str]) -> list[str]:
    """The ``wanted`` elements that have a row in ``df``, in the order asked for."""
    return [e for e in wanted if (df["element"] == e).any()]


def layers_with_enough_rows(
    df: pd.DataFrame, elements: list[str], layers: Iterable[str], min_rows: int
) -> tuple[list[str], list[str]]:
    """The ``layers`` (in that order) where every element has ``min_rows`` rows or more, and
    those present in ``df`` that fall short: a cell with too few rows cannot be fitted, and a
    layer is fitted for every element or for none."""
    layers = list(layers)
    counts = df.groupby(["element", "layer"]).size()
    kept = [lay for lay in layers if all(counts.get((e, lay), 0) >= min_rows for e in elements)]
    short = [lay for lay in layers if lay not in kept and (df["layer"] == lay).any()]
    return kept, short


@dataclass
class CellStandardisation:
    """A response standardised per element x layer cell (what the models' priors are scaled to).

    ``y`` = (value - cell mean) / cell sd, the sd with ddof 0 and 1 where a cell is constant;
    ``loc`` and ``scale`` are those per cell (indexed by element, layer) and ``row_scale`` each
    row's cell sd (to standardise the row's known variances alike).
    """

    y: np.ndarray
    loc: pd.Series
    scale: pd.Series
    row_scale: np.ndarray

    def grids(self, elements: list[str], layers: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``loc`` and ``scale`` as (element, layer) arrays, to undo the standardisation."""
        loc = np.array([[self.loc[(e, lay)] for lay in layers] for e in elements])
        scale = np.array([[self.scale[(e, lay)] for lay in layers] for e in elements])
        return loc, scale


def standardise_by_cell(df: pd.DataFrame, column: str) -> CellStandardisation:
    """Standardise ``df[column]`` per element x layer (see :class:`CellStandardisation`)."""
    grp = df.groupby(["element", "layer"])[column]
    loc = grp.mean()
    scale = grp.std(ddof=0).replace(0.0, 1.0)
    keys = list(zip(df["element"], df["layer"], strict=True))
    row_scale = scale.loc[keys].to_numpy()
    y = (df[column].to_numpy() - loc.loc[keys].to_numpy()) / row_scale
    return CellStandardisation(y=y, loc=loc, scale=scale, row_scale=row_scale)
