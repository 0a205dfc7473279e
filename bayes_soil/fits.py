"""Saving, loading and listing fits: ``fits/<model>/<run_id>.nc`` with provenance attributes.

A fit is an ``xarray.DataTree`` in the InferenceData schema written with h5netcdf. Its root
attributes (strings and numbers only) record who made it from what: package and library
versions, model name and spec, sampler settings, data SHA-256, seed, creation time and the
diagnostics verdict. Writes go through :func:`bayes_soil.io.atomic_path` (a
``.<name>.<pid>-<random>.partial`` file beside the target, renamed into place), so a run killed
half-way leaves only a partial file, which the next save removes.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from bayes_soil import __version__, mcmc_stats
from bayes_soil.errors import InputError
from bayes_soil.io import atomic_path, clean_partials

if TYPE_CHECKING:
    import xarray as xr


class SamplerSettings(Protocol):
    """What the store needs of a fit's sampler settings (``models.base.FitSettings``); the
    store does not import the models, which import it."""

    sampler: str
    seed: int

    def to_json(self) -> str: ...


DEFAULT_STORE = Path("fits")
RHAT_MAX = 1.01
ESS_BULK_MIN = 400
ESS_TAIL_MIN = 400
# nuisance parameters (not shown by the report) fail a fit only when chains disagree outright
NUISANCE_RHAT_MAX = 1.05
REQUIRED_ATTRS = (
    "bayes_soil_version",
    "model",
    "spec",
    "sampler",
    "data_sha256",
    "seed",
    "created_at",
    "diagnostics_verdict",
    "diagnostics",
)
LIBRARIES = (
    "pymc",
    "pytensor",
    "nutpie",
    "arviz",
    "arviz-base",
    "arviz-stats",
    "numpy",
    "xarray",
    "pandas",
    "h5netcdf",
)


# ---- provenance -------------------------------------------------------------------------------
def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a fit (for the ``library_versions`` attribute)."""
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance_attrs(
    *,
    model: str,
    spec_json: str,
    settings: SamplerSettings,
    data_sha256: str,
    synthetic: bool,
    diagnostics: dict,
) -> dict[str, Any]:
    """Root attributes of a fit (netCDF-safe: strings and numbers, JSON for structures)."""
    return {
        "bayes_soil_version": __version__,
        "model": model,
        "spec": spec_json,
        "sampler": settings.to_json(),
        "sampler_name": settings.sampler,
        "data_sha256": data_sha256,
        "seed": int(settings.seed),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "library_versions": json.dumps(library_versions(), sort_keys=True),
        "synthetic": int(bool(synthetic)),
        "diagnostics_verdict": diagnostics["verdict"],
        "diagnostics": json.dumps(diagnostics, sort_keys=True),
    }


# ---- diagnostics gate -----------------------------------------------------------------------
def diagnostics_verdict(
    max_rhat: float,
    min_ess_bulk: float,
    divergences: int,
    min_ess_tail: float | None = None,
    nuisance_max_rhat: float | None = None,
) -> dict:
    """The gate, with advice: on the judged quantities R-hat > 1.01, bulk or tail ESS < 400
    (Vehtari et al. 2021), or any divergence fails the fit; so does a nuisance parameter whose
    chains disagree outright (R-hat > 1.05). ``None``: not measured (not judged)."""
    problems, advice = [], []
    if not np.isfinite(max_rhat) or max_rhat > RHAT_MAX:
        problems.append(f"max R-hat {max_rhat:.3f} > {RHAT_MAX}")
        advice.append("run longer chains (--tune/--draws) or more chains")
    if not np.isfinite(min_ess_bulk) or min_ess_bulk < ESS_BULK_MIN:
        problems.append(f"min bulk ESS {min_ess_bulk:.0f} < {ESS_BULK_MIN}")
        advice.append("draw more (--draws) so the bulk and tail ESS reach 400")
    if min_ess_tail is not None and not min_ess_tail >= ESS_TAIL_MIN:
        problems.append(f"min tail ESS {min_ess_tail:.0f} < {ESS_TAIL_MIN}")
        advice.append("draw more (--draws) so the bulk and tail ESS reach 400")
    if nuisance_max_rhat is not None and not nuisance_max_rhat <= NUISANCE_RHAT_MAX:
        problems.append(
            f"a nuisance parameter's R-hat {nuisance_max_rhat:.3f} > {NUISANCE_RHAT_MAX}"
        )
        advice.append("run longer chains (--tune/--draws) or more chains")
    if divergences > 0:
        problems.append(f"{divergences} divergent transitions")
        advice.append(
            "raise --target-accept (e.g. 0.95) or simplify the model; divergences mean the "
            "posterior may be explored incompletely"
        )
    verdict = "fail" if problems else "pass"
    return {
        "verdict": verdict,
        "max_rhat": float(max_rhat),
        "min_ess_bulk": float(min_ess_bulk),
        "divergences": int(divergences),
        "rhat_max_allowed": RHAT_MAX,
        "ess_bulk_min_required": ESS_BULK_MIN,
        "problems": "; ".join(problems),
        "advice": "; ".join(dict.fromkeys(advice)) if advice else "",
    }


#: the per-cell statistics a fit stores in its ``diagnostics`` group (dimension ``diagnostic``)
CELL_STATS = ("r_hat", "ess_bulk", "ess_tail")


def cell_diagnostics(post: xr.Dataset) -> xr.Dataset:
    """R-hat, bulk and tail ESS of every cell of every numeric posterior variable (ArviZ's
    statistics, :mod:`bayes_soil.mcmc_stats`), as one Dataset with the variables' own dims and a
    ``diagnostic`` dimension. NaN where a draw is not finite (psi without a turning point) and
    R-hat NaN where a cell is constant. Computed once when a fit is made and stored with it, so
    the gate and the report do not sort the draws again."""
    import warnings

    import xarray as xr

    out = {}
    for name, da in post.data_vars.items():
        if not np.issubdtype(da.dtype, np.number):
            continue
        cells = [d for d in da.dims if d not in ("chain", "draw")]
        x = da.transpose(*cells, "chain", "draw").to_numpy()
        with warnings.catch_warnings():  # constant cells give NaN R-hat, as in ArviZ
            warnings.simplefilter("ignore", RuntimeWarning)
            st = mcmc_stats.summary(x.reshape(-1, *x.shape[-2:]))
        vals = np.stack(
            [st[k].reshape(x.shape[: len(cells)]) for k in ("rhat", "ess_bulk", "ess_tail")]
        )
        coords = {d: da.coords[d] for d in cells if d in da.coords}
        out[name] = xr.DataArray(vals, dims=("diagnostic", *cells), coords=coords)
    return xr.Dataset(out, coords={"diagnostic": list(CELL_STATS)}).assign_attrs(
        description="per-cell R-hat (rank-normalised split), bulk and tail ESS (Vehtari et al. "
        "2021, ArviZ's definitions); NaN where a draw is not finite or a cell is constant"
    )


def cell_diagnostics_of(dt: xr.DataTree) -> xr.Dataset:
    """A fit's per-cell diagnostics: its stored ``diagnostics`` group (variables the model does
    not measure, such as a non-centred z, are absent), or for a fit saved before that group
    existed, :func:`cell_diagnostics` of its whole posterior."""
    if "diagnostics" in dt.children:
        return dt["diagnostics"].to_dataset()
    return cell_diagnostics(dt["posterior"].to_dataset())


def _worst(cells: xr.Dataset, names: list[str], tail: bool) -> dict:
    """Max R-hat, min bulk (and tail) ESS over ``names``' cells (NaN cells skipped), and whose
    they are."""
    keys = {"max_rhat": ("r_hat", np.nanargmax, "worst_rhat_var")}
    keys["min_ess_bulk"] = ("ess_bulk", np.nanargmin, "worst_ess_var")
    if tail:
        keys["min_ess_tail"] = ("ess_tail", np.nanargmin, "worst_tail_ess_var")
    out: dict = {k: np.nan for k in keys}
    names = [v for v in names if v in cells]
    if not names:
        return out
    for key, (stat, pick, worst) in keys.items():
        vals = [cells[v].sel(diagnostic=stat).to_numpy().ravel() for v in names]
        owner = np.repeat(names, [len(v) for v in vals])
        flat = np.concatenate(vals)
        if np.isfinite(flat).any():
            i = int(pick(flat))
            out[key] = float(flat[i])
            out[worst] = str(owner[i])
    return out


def check_diagnostics(
    dt: xr.DataTree,
    var_names: list[str] | tuple[str, ...] | None = None,
    nuisance: list[str] | tuple[str, ...] = (),
    cells: xr.Dataset | None = None,
) -> dict:
    """R-hat, bulk and tail ESS and divergences of a fit's posterior, and the gate's verdict.

    ``var_names`` (default: every posterior variable) are the judged quantities: what the
    report shows. ``nuisance`` variables (per-study effects, variance components that the
    report does not show) are measured and listed, and fail the fit only when their chains
    disagree outright (R-hat > 1.05). Cells with a non-finite draw (NaN where no turning point
    was drawn) are skipped; constant cells give NaN R-hat and are skipped too. ``cells``:
    :func:`cell_diagnostics` of the posterior (default: :func:`cell_diagnostics_of` the fit).
    """
    post = dt["posterior"].to_dataset()
    names = [v for v in (var_names or list(post.data_vars)) if v in post]
    nuis_names = [v for v in nuisance if v in post and v not in names]
    cells = cell_diagnostics_of(dt) if cells is None else cells
    judged = _worst(cells, names, tail=True)
    nuis = _worst(cells, nuis_names, tail=False) if nuis_names else None
    div, steps = 0, np.nan
    if "sample_stats" in dt:
        ss = dt["sample_stats"].to_dataset()
        if "diverging" in ss:
            div = int(ss["diverging"].values.sum())
        if "n_steps" in ss:
            steps = float(ss["n_steps"].values.mean())
    out = diagnostics_verdict(
        judged["max_rhat"],
        judged["min_ess_bulk"],
        div,
        min_ess_tail=judged["min_ess_tail"],
        nuisance_max_rhat=nuis["max_rhat"] if nuis else None,
    )
    out["min_ess_tail"] = judged["min_ess_tail"]
    out["ess_tail_min_required"] = ESS_TAIL_MIN
    out.update({k: v for k, v in judged.items() if k.startswith("worst_")})
    out["mean_steps_per_draw"] = steps
    out["judged_vars"] = names
    if nuis:
        out["nuisance_vars"] = nuis_names
        out["nuisance_max_rhat"] = nuis["max_rhat"]
        out["nuisance_min_ess_bulk"] = nuis["min_ess_bulk"]
        out["worst_nuisance_rhat_var"] = nuis.get("worst_rhat_var", "")
        out["worst_nuisance_ess_var"] = nuis.get("worst_ess_var", "")
        out["nuisance_rhat_max_allowed"] = NUISANCE_RHAT_MAX
    return out


def nuisance_summary(diag: Mapping) -> str:
    """'max R-hat 1.006 (sd_site), min bulk ESS 823 (sd_site)' of the nuisance parameters a
    gate listed ('' when it listed none): one wording for the console and the report."""
    if "nuisance_max_rhat" not in diag:
        return ""
    return (
        f"max R-hat {diag['nuisance_max_rhat']:.3f} ({diag.get('worst_nuisance_rhat_var', '?')}), "
        f"min bulk ESS {diag['nuisance_min_ess_bulk']:.0f} "
        f"({diag.get('worst_nuisance_ess_var', '?')})"
    )


def json_attr(source: xr.DataTree | dict, name: str, default: Any = None) -> Any:
    """A JSON-encoded root attribute of a fit (``dt`` or its attrs dict), decoded.

    ``default`` (None unless given) when the attribute is absent or empty; an attribute that is
    not valid JSON is an InputError naming it (a damaged or foreign file).
    """
    attrs = source if isinstance(source, dict) else source.attrs
    raw = attrs.get(name)
    if raw is None or (isinstance(raw, str | bytes) and not raw.strip()):
        return default
    if isinstance(raw, bytes):
        raw = raw.decode()
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"fit attribute {name!r} is not valid JSON ({exc})") from exc


def diagnostics_of(dt: xr.DataTree | dict) -> dict:
    """The stored diagnostics dict of a fit (empty when absent)."""
    return json_attr(dt, "diagnostics", {})


# ---- store --------------------------------------------------------------------------------
def new_run_id(data_sha256: str, seed: int) -> str:
    """A sortable, readable run id: UTC time, data hash prefix, seed."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{data_sha256[:8]}-seed{seed}"


def fit_path(model: str, run_id: str, store: str | Path = DEFAULT_STORE) -> Path:
    """``<store>/<model>/<run_id>.nc``, made unique if that name exists."""
    base = Path(store) / model / f"{run_id}.nc"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{run_id}-{i}.nc")
    return path


def save_fit(dt: xr.DataTree, path: str | Path) -> Path:
    """Write ``dt`` to ``path`` atomically (h5netcdf); returns the final path.

    Attributes must be strings or numbers (netCDF); a missing provenance attribute is an error,
    so that nothing unidentifiable lands in the store.
    """
    path = Path(path)
    missing = [a for a in REQUIRED_ATTRS if a not in dt.attrs]
    if missing:
        raise ValueError(f"fit lacks provenance attribute(s): {', '.join(missing)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_partials(path.parent)
    _sanitise_attrs(dt)
    with atomic_path(path) as tmp:
        dt.to_netcdf(tmp, engine="h5netcdf")
    return path


def _sanitise_attrs(dt: xr.DataTree) -> None:
    """netCDF attributes: drop None, JSON-encode dicts and booleans as ints."""
    for node in dt.subtree:
        attrs = dict(node.attrs)
        for k, v in list(attrs.items()):
            if v is None:
                del attrs[k]
            elif isinstance(v, dict):
                attrs[k] = json.dumps(v, sort_keys=True, default=str)
            elif isinstance(v, bool | np.bool_):
                attrs[k] = int(v)
        node.attrs = attrs


def load_fit(path: str | Path, expected_sha256: str | None = None) -> xr.DataTree:
    """Open a stored fit, check its provenance, and refuse it if made from other data.

    Raises InputError when the file is missing, not a bayes_soil fit, or when
    ``expected_sha256`` is given and differs from the fit's ``data_sha256``.
    """
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: fit file not found")
    try:
        dt = xr.load_datatree(path, engine="h5netcdf")
    except Exception as exc:  # h5py/xarray raise many types for a bad file
        raise InputError(f"{path}: cannot be read as a netCDF fit ({exc})") from exc
    missing = [a for a in REQUIRED_ATTRS if a not in dt.attrs]
    if missing:
        raise InputError(
            f"{path}: not a bayes_soil fit (missing attribute(s) {', '.join(missing)})"
        )
    if "posterior" not in dt:
        raise InputError(f"{path}: the fit has no posterior group")
    if expected_sha256 is not None and dt.attrs["data_sha256"] != expected_sha256:
        raise InputError(
            f"{path}: this fit was made from other data (data_sha256 "
            f"{dt.attrs['data_sha256'][:12]}...), not from the data given "
            f"({expected_sha256[:12]}...); refit with 'python -m bayes_soil fit --data ...' "
            "or pass the data the fit was made from"
        )
    return dt


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Root attributes of a fit without loading its arrays (for listing the store)."""
    import h5netcdf

    with h5netcdf.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def list_fits(store: str | Path = DEFAULT_STORE) -> pd.DataFrame:
    """One row per stored fit: path, model, run_id, data hash, date, sampler, verdict."""
    store = Path(store)
    rows = []
    for p in sorted(store.glob("*/*.nc")) if store.is_dir() else []:
        try:
            a = read_attrs(p)
        except OSError:
            rows.append({"path": str(p), "model": "?", "verdict": "unreadable"})
            continue
        diag = diagnostics_of(a)
        rows.append(
            {
                "path": str(p),
                "model": a.get("model", "?"),
                "run_id": p.stem,
                "data_sha256": str(a.get("data_sha256", ""))[:12],
                "created_at": a.get("created_at", ""),
                "sampler": a.get("sampler_name", ""),
                "seed": a.get("seed", ""),
                "synthetic": bool(int(a.get("synthetic", 0))),
                "stock_method": a.get("stock_method", "fixed"),
                "verdict": a.get("diagnostics_verdict", "?"),
                "max_rhat": diag.get("max_rhat", np.nan),
                "min_ess_bulk": diag.get("min_ess_bulk", np.nan),
                "divergences": diag.get("divergences", np.nan),
            }
        )
    cols = [
        "path",
        "model",
        "run_id",
        "data_sha256",
        "created_at",
        "sampler",
        "seed",
        "synthetic",
        "stock_method",
        "verdict",
        "max_rhat",
        "min_ess_bulk",
        "divergences",
    ]
    return pd.DataFrame(rows, columns=cols)
