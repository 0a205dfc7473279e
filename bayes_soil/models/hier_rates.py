"""hier_rates: stage-wise rates of change of layer stocks, partially pooled across vegetation.

Per element e and fitted layer l (0-20, 20-100, 100-200; 0-200 is derived), on the stock
y_i standardised per element x layer:

    y_i ~ StudentT(nu[e], mu_i, sigma[e, l])
    mu_i = unit_eff[cell_i] + sum_g beta[e, veg_i, g, l] * h_g(years_i) / 10
    h_g(t) = clip(t - a_g, 0, b_g - a_g)        (continuous piecewise-linear trajectory)

with hierarchical centring (DESIGN.md section 5, measured there): each chronosequence unit
(study x site x vegetation x origin, with its year-0 control) is centred on its site effect,
the site effect on the layer intercept, and beta on the pooled stage rate:

    unit_eff[(e, unit, l)] ~ Normal(site_eff[(e, site, l)], sd_unit[e, l])
    site_eff[(e, site, l)] ~ Normal(alpha[e, l], sd_site[e, l])
    beta[e, v, g, l]        ~ Normal(mu_beta[e, g, l], tau[e, l])

Only observed (unit, layer) and (site, layer) cells get a parameter (an empty cell would be
prior alone and form a funnel). The basis is in decades, so beta is standardised stock per
decade; ``rate`` = beta x sd(stock) / 10 is in Mg ha-1 yr-1. The fitted layer dimension is
called ``fit_layer`` so that the reported ``layer`` dimension can carry the derived "0-200".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bayes_soil.errors import InputError
from bayes_soil.models.base import ModelData, SoilModel, index_of, register
from bayes_soil.schema import (
    LAYERS,
    ORIGINS,
    STAGE_LOWER,
    STAGE_UPPER,
    STAGES,
    VEGETATION,
)

if TYPE_CHECKING:
    import pymc as pm
    import xarray as xr

UNIT_KEYS = ("study_id", "site_id", "vegetation", "origin")


def stage_basis(years: np.ndarray, n_stages: int) -> np.ndarray:
    """(n, n_stages) basis h_g(t) in decades; the last fitted stage is open-ended."""
    lower = np.asarray(STAGE_LOWER[:n_stages])
    upper = np.asarray(STAGE_UPPER[:n_stages], dtype=float).copy()
    upper[-1] = np.inf
    return np.clip(np.asarray(years, float)[:, None] - lower, 0.0, upper - lower) / 10.0


@register
class HierRates(SoilModel):
    """Layer stocks: stage rates per vegetation x layer, partially pooled across vegetation."""

    name = "hier_rates"
    table = "layers"
    observed = ("stock",)

    # ---- data -------------------------------------------------------------------------
    def prepare(self, table: pd.DataFrame) -> ModelData:
        spec = self.spec
        need = {"study_id", "site_id", "vegetation", "origin", "years", "element", "layer"}
        missing = need - set(table.columns) | ({"stock_mg_ha"} - set(table.columns))
        if missing:
            raise InputError(f"layers table lacks column(s): {', '.join(sorted(missing))}")
        df = table[table["layer"].isin(LAYERS)].copy()
        df["stock_mg_ha"] = pd.to_numeric(df["stock_mg_ha"], errors="coerce")
        df["years"] = pd.to_numeric(df["years"], errors="coerce")
        df = df[np.isfinite(df["stock_mg_ha"]) & np.isfinite(df["years"]) & (df["years"] >= 0)]
        elements = [e for e in spec["data"]["elements"] if (df["element"] == e).any()]
        if not elements:
            raise InputError(
                f"no layer stocks for element(s) {spec['data']['elements']} in the data"
            )
        origins = [o for o in spec["data"].get("origins", ORIGINS) if o in ORIGINS]
        df = df[df["element"].isin(elements) & df["origin"].isin(origins)]
        min_rows = int(spec["data"].get("min_rows_per_layer", 10))
        counts = df.groupby(["element", "layer"]).size()
        fit_layers = [
            lay for lay in LAYERS if all(counts.get((e, lay), 0) >= min_rows for e in elements)
        ]
        dropped = [lay for lay in LAYERS if lay not in fit_layers and (df["layer"] == lay).any()]
        if not fit_layers:
            raise InputError(
                f"no layer has {min_rows} or more stock rows for every element {elements}"
            )
        df = df[df["layer"].isin(fit_layers)].reset_index(drop=True)
        vegetation = [v for v in VEGETATION if (df["vegetation"] == v).any()]
        others = sorted(set(df["vegetation"]) - set(VEGETATION))
        if others:
            raise InputError(f"unknown vegetation label(s) {others}; expected {VEGETATION}")
        max_years = float(df["years"].max())
        n_stages = max(1, sum(lo < max_years for lo in STAGE_LOWER))
        stages = list(STAGES[:n_stages])

        # standardise per element x layer
        grp = df.groupby(["element", "layer"])["stock_mg_ha"]
        loc = grp.mean()
        scale = grp.std(ddof=0).replace(0.0, 1.0)
        keys = list(zip(df["element"], df["layer"], strict=True))
        y = (df["stock_mg_ha"].to_numpy() - loc.loc[keys].to_numpy()) / scale.loc[keys].to_numpy()

        unit = df[list(UNIT_KEYS)].astype(str).agg("|".join, axis=1)
        site = df["site_id"].astype(str)
        ucell_key = df["element"] + "#" + unit + "#" + df["layer"]
        scell_key = df["element"] + "#" + site + "#" + df["layer"]
        ucells = list(pd.unique(ucell_key))
        first = pd.DataFrame({"u": ucell_key, "s": scell_key}).drop_duplicates("u")
        # a site effect only where a site holds two or more units: with one unit the site and
        # unit effects are not separable (a funnel); that unit's site effect is integrated out
        units_per_site = first["s"].value_counts()
        scells = [k for k in pd.unique(scell_key) if units_per_site[k] >= 2]
        site_of_unit = first.set_index("u").loc[ucells, "s"]
        has_site = site_of_unit.map(lambda k: units_per_site[k] >= 2).to_numpy()
        ucell_site = np.where(
            has_site,
            index_of(site_of_unit.where(has_site, scells[0] if scells else ""), scells or [""]),
            len(scells),
        )
        e_of = {e: i for i, e in enumerate(elements)}
        l_of = {lay: i for i, lay in enumerate(fit_layers)}
        ucell_el = np.array([[e_of[k.split("#")[0]], l_of[k.split("#")[-1]]] for k in ucells])
        scell_el = np.array(
            [[e_of[k.split("#")[0]], l_of[k.split("#")[-1]]] for k in scells], dtype=np.int64
        ).reshape(-1, 2)

        obs_id = (
            df["profile_id"].astype(str) + "|" + df["element"] + "|" + df["layer"]
            if "profile_id" in df.columns
            else pd.Series([f"row{i}" for i in range(len(df))])
        )
        if obs_id.duplicated().any():
            obs_id = obs_id + "|" + pd.Series(np.arange(len(df)).astype(str))
        arrays = {
            "stock": y,
            "years": df["years"].to_numpy(float),
            "years_centred": (
                df["years"] - df.groupby(ucell_key)["years"].transform("mean")
            ).to_numpy(float)
            / 10.0,
            "basis": stage_basis(df["years"].to_numpy(float), n_stages),
            "element_idx": index_of(df["element"], elements),
            "vegetation_idx": index_of(df["vegetation"], vegetation),
            "layer_idx": index_of(df["layer"], fit_layers),
            "unit_cell_idx": index_of(ucell_key, ucells),
            "planted": (df["origin"] == "planted").to_numpy(float),
            "unit_cell_site": ucell_site,
            "unit_cell_has_site": has_site.astype(float),
            "unit_cell_element": ucell_el[:, 0],
            "unit_cell_layer": ucell_el[:, 1],
            "site_cell_element": scell_el[:, 0],
            "site_cell_layer": scell_el[:, 1],
        }
        # rows per element x vegetation x stage x layer (a profile counts in its own stage)
        n_rows = (
            df.assign(stage=pd.Categorical(_stage_labels(df["years"], n_stages), stages))
            .groupby(["element", "vegetation", "stage", "layer"], observed=False)
            .size()
        )
        max_age = df.groupby("vegetation")["years"].max().reindex(vegetation).to_numpy(float)
        coords = {
            "element": elements,
            "vegetation": vegetation,
            "stage": stages,
            "fit_layer": fit_layers,
            "site_cell": scells,
            "unit_cell": ucells,
            "obs_id": obs_id.tolist(),
        }
        meta = {
            "loc": np.array([[loc[(e, lay)] for lay in fit_layers] for e in elements]),
            "scale": np.array([[scale[(e, lay)] for lay in fit_layers] for e in elements]),
            "max_age": max_age,
            "n_rows": n_rows,
            "dropped_layers": dropped,
            "origins": origins,
        }
        return ModelData(coords=coords, arrays=arrays, meta=meta, n_obs=len(df))

    # ---- model ------------------------------------------------------------------------
    def build(self, data: ModelData) -> pm.Model:
        import pymc as pm
        import pytensor.tensor as pt

        pri = self.spec["priors"]
        struct = self.spec["structure"]
        a = data.arrays
        coords = {k: v for k, v in data.coords.items() if len(v) or k != "site_cell"}
        n_veg = len(coords["vegetation"])
        with pm.Model(coords=coords) as model:
            e_i = pm.Data("element_idx", a["element_idx"], dims="obs_id")
            pm.Data("vegetation_idx", a["vegetation_idx"], dims="obs_id")
            l_i = pm.Data("layer_idx", a["layer_idx"], dims="obs_id")
            u_i = pm.Data("unit_cell_idx", a["unit_cell_idx"], dims="obs_id")
            basis = pm.Data("basis", a["basis"], dims=("obs_id", "stage"))
            pm.Data("years", a["years"], dims="obs_id")

            alpha = pm.Normal("alpha", 0.0, pri["alpha_sd"], dims=("element", "fit_layer"))
            sd_site = pm.HalfNormal("sd_site", pri["sd_site"], dims=("element", "fit_layer"))
            sd_unit = pm.HalfNormal("sd_unit", pri["sd_unit"], dims=("element", "fit_layer"))
            se, sl = a["site_cell_element"], a["site_cell_layer"]
            ue, ul = a["unit_cell_element"], a["unit_cell_layer"]
            has = a["unit_cell_has_site"]
            if len(se):
                site_eff = pm.Normal("site_eff", alpha[se, sl], sd_site[se, sl], dims="site_cell")
                site_ext = pt.concatenate([site_eff, pt.zeros(1)])[a["unit_cell_site"]]
            else:
                site_ext = pt.zeros(len(ue))
            unit_mu = site_ext + (1.0 - has) * alpha[ue, ul]
            unit_sd = pt.sqrt(sd_unit[ue, ul] ** 2 + (1.0 - has) * sd_site[ue, ul] ** 2)
            unit_eff = pm.Normal("unit_eff", unit_mu, unit_sd, dims="unit_cell")
            mu_beta = pm.Normal(
                "mu_beta", 0.0, pri["mu_beta_sd"], dims=("element", "stage", "fit_layer")
            )
            if n_veg > 1:
                tau = pm.HalfNormal("tau", pri["tau"], dims=("element", "fit_layer"))
                beta = pm.Normal(
                    "beta",
                    mu_beta[:, None, :, :],
                    tau[:, None, None, :],
                    dims=("element", "vegetation", "stage", "fit_layer"),
                )
            else:  # one vegetation type: nothing to pool, tau would be prior alone (a funnel)
                beta = pm.Deterministic(
                    "beta",
                    mu_beta[:, None, :, :],
                    dims=("element", "vegetation", "stage", "fit_layer"),
                )
            # one row gather per observation (AdvancedSubtensor1 and its fast gradient)
            n_v, n_l = len(coords["vegetation"]), len(coords["fit_layer"])
            cell = pm.Data(
                "rate_cell_idx",
                (a["element_idx"] * n_v + a["vegetation_idx"]) * n_l + a["layer_idx"],
                dims="obs_id",
            )
            n_g = len(coords["stage"])
            beta_rows = beta.dimshuffle(0, 1, 3, 2).reshape((-1, n_g))
            beta_i = beta_rows[cell]  # (obs, stage)
            if struct.get("origin", "pooled") == "contrast":
                d = pm.Normal("origin_contrast", 0.0, 0.5, dims=("element", "stage", "fit_layer"))
                sign = pm.Data("planted", a["planted"], dims="obs_id") - 0.5
                beta_i = beta_i + sign[:, None] * d[e_i, :, l_i]
            mu = (beta_i * basis).sum(axis=1)
            if struct.get("unit_slopes", False):
                sd_w = pm.HalfNormal(
                    "sd_unit_slope", pri["sd_unit_slope"], dims=("element", "fit_layer")
                )
                if struct.get("unit_slopes_centred", True):
                    w = pm.Normal("unit_slope", 0.0, sd_w[ue, ul], dims="unit_cell")
                else:
                    w_raw = pm.Normal("unit_slope_raw", 0.0, 1.0, dims="unit_cell")
                    w = pm.Deterministic("unit_slope", w_raw * sd_w[ue, ul], dims="unit_cell")
                # deviation about each unit's mean age (decorrelates it from the unit level);
                # level and slope fetched with one row gather
                yc = pm.Data("years_centred", a["years_centred"], dims="obs_id")
                unit_i = pt.stack([unit_eff, w], axis=1)[u_i]
                mu = mu + unit_i[:, 0] + unit_i[:, 1] * yc
            else:
                mu = mu + unit_eff[u_i]
            sigma = pm.HalfNormal("sigma", pri["sigma"], dims=("element", "fit_layer"))
            el_i = pm.Data(
                "element_layer_idx", a["element_idx"] * n_l + a["layer_idx"], dims="obs_id"
            )
            nu = pm.Gamma("nu", alpha=pri["nu_alpha"], beta=pri["nu_beta"])
            pm.StudentT(
                "stock",
                nu=nu,
                mu=mu,
                sigma=sigma.flatten()[el_i],
                observed=a["stock"],
                dims="obs_id",
            )
        return model

    # ---- derived quantities (original units) --------------------------------------------
    def derived(self, posterior: xr.Dataset, data: ModelData) -> xr.Dataset:
        import xarray as xr

        from bayes_soil.posterior import (
            add_total_layer,
            years_to_gain,
        )

        scale = xr.DataArray(
            data.meta["scale"],
            dims=("element", "fit_layer"),
            coords={"element": data.coords["element"], "fit_layer": data.coords["fit_layer"]},
        )
        rate = (posterior["beta"] * scale / 10.0).rename(fit_layer="layer")
        rate = add_total_layer(rate)
        out = {"rate": rate, "rate_mean": rate.mean("vegetation")}
        elements = list(data.coords["element"])
        if "C" in elements and "N" in elements:
            ratio = rate.sel(element="C", drop=True) / rate.sel(element="N", drop=True)
            out["rate_ratio"] = ratio
            out["rate_ratio_mean"] = out["rate_mean"].sel(element="C", drop=True) / out[
                "rate_mean"
            ].sel(element="N", drop=True)
        max_age = xr.DataArray(
            data.meta["max_age"],
            dims="vegetation",
            coords={"vegetation": data.coords["vegetation"]},
        )
        out["years_to_gain"] = years_to_gain(rate, max_age)
        if "origin_contrast" in posterior:
            oc = (posterior["origin_contrast"] * scale / 10.0).rename(fit_layer="layer")
            out["rate_origin_contrast"] = add_total_layer(oc)
        ds = xr.Dataset(out)
        ds["rate"].attrs.update(units="Mg ha-1 yr-1", long_name="stage rate of stock change")
        ds["rate_mean"].attrs.update(
            units="Mg ha-1 yr-1", long_name="equal-weight mean rate over vegetation ('all')"
        )
        ds["years_to_gain"].attrs.update(
            units="yr",
            long_name="first age after which the cumulative change stays positive; NaN = not "
            "within the observed ages of that vegetation",
        )
        return ds

    def extra_attrs(self, dt, data, settings) -> dict:
        import json

        attrs = {
            "fit_layers": json.dumps(list(data.coords["fit_layer"])),
            "dropped_layers": json.dumps(data.meta["dropped_layers"]),
            "observed_max_age": json.dumps(
                dict(zip(data.coords["vegetation"], map(float, data.meta["max_age"]), strict=True))
            ),
        }
        # rows per cell: what each rate rests on (0-200: profiles with all three layers)
        n = data.meta["n_rows"]
        cd = dt["constant_data"].to_dataset() if "constant_data" in dt else None
        if cd is not None:
            import xarray as xr

            arr = n.to_xarray().rename(layer="fit_layer")
            arr = arr.reindex(
                fit_layer=data.coords["fit_layer"],
                element=data.coords["element"],
                vegetation=data.coords["vegetation"],
                stage=data.coords["stage"],
            )
            dt["constant_data"] = cd.assign(n_rows=arr.fillna(0).astype("int64"))
            del xr
        return attrs


def _stage_labels(years: pd.Series, n_stages: int) -> np.ndarray:
    """Stage of each age, the last fitted stage open-ended."""
    upper = np.asarray(STAGE_UPPER[: n_stages - 1])
    idx = np.searchsorted(upper, np.asarray(years, float), side="left")
    return np.asarray(STAGES, dtype=object)[idx]


__all__ = ["HierRates", "stage_basis"]
