"""climate_breakpoints: change rates against MAP and/or MAT with a turning point per layer.

Per element e, driver d and layer l, on change rates r_i (``changes.rate_mg_ha_yr``)
standardised per element x layer, with each driver x_d standardised over the fitted rows:

    r_i ~ StudentT(nu[e], m_i, s_i),   s_i^2 = sigma[e,l]^2 + (sigma_meas[e,l] * 10 / years_i)^2
    m_i = c[e,l] + sum_d ( kbar[e,d,l] x_di + dk[e,d,l] / 2 (|x_di - psi[e,d,l]| - |psi|) )
          + u[(e, study_i, l)]
    k1 = kbar - dk / 2,  k2 = kbar + dk / 2   (so k1 min(x - psi, 0) + k2 max(x - psi, 0))
    kbar ~ Normal(0, slope_sd),  dk[e,d,l] ~ Normal(0, change_sd)
        (change_sd_beside_other[d] instead when both drivers are hinged)
    psi[e,d,l] = lo_d + (hi_d - lo_d) * logistic(z[e,d,l]),  z ~ Normal(z0[e,d], tau_psi)

The slopes are a mean slope and a change of slope shrunk towards 0, so "no turning point" is
the null and, where the change is near 0, psi only sees its prior (no ridge dragging the slopes
along). The turning point lies between the quantiles of the driver set by ``psi_quantiles``
(default 10th-90th), with a unimodal logit-normal prior in the middle of that
range (total logit sd < 1), so a silent driver gives a wide central psi, not spikes at the
ends. |t| is smoothed over ``hinge_smoothness`` standardised units.

With ``drivers = [map_mm, mat_c]`` both hinges sit in one model, so a temperature "turning
point" that is only the shadow of a precipitation one (MAT and MAP co-vary) is not reported as
real. The data cannot separate the two hinges when the drivers co-vary strongly (r = 0.89 on the
demo): with a weak prior on the MAT change the MAT psi jumps between the range ends across
chains. The default spec therefore gives the MAT change of slope a strong shrinkage prior
(``change_sd_beside_other.mat_c``, used only when both drivers are hinged): with both drivers
the MAT hinge is a small adjustment and its psi is essentially its prior; ``--driver mat_c``
alone uses the ordinary ``change_sd``. Study random effects soak up between-study
differences; with iid errors clustered data make spurious breaks look certain.

The same class with ``breaks = []`` (``no_break_spec``) is the linear comparison model; ``fit``
samples it too and stores the PSIS-LOO comparison (elpd difference and its SE) in the root
attributes, per element and driver.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayes_soil.errors import InputError
from bayes_soil.models.base import (
    ModelData,
    SoilModel,
    deep_merge,
    index_of,
    register,
    sample_model,
)
from bayes_soil.schema import ALL_LAYERS, DRIVERS

if TYPE_CHECKING:
    import pymc as pm
    import xarray as xr


@register
class ClimateBreakpoints(SoilModel):
    """Change rates vs climate: hinge per layer, pooled turning points, study effects."""

    name = "climate_breakpoints"
    table = "changes"
    observed = ("rate",)

    def breaks(self) -> list[str]:
        """Drivers that get a hinge (default: every fitted driver)."""
        b = self.spec["structure"].get("breaks", True)
        drivers = list(self.spec["data"]["drivers"])
        if b is True:
            return drivers
        if b is False:
            return []
        return [d for d in drivers if d in b]

    # ---- data -------------------------------------------------------------------------
    def prepare(self, table: pd.DataFrame) -> ModelData:
        spec = self.spec
        drivers = [d for d in spec["data"]["drivers"] if d in DRIVERS]
        if not drivers:
            raise InputError(f"no known driver in {spec['data']['drivers']}; use {DRIVERS}")
        need = {"study_id", "element", "layer", "years", "rate_mg_ha_yr", *drivers}
        missing = need - set(table.columns)
        if missing:
            raise InputError(f"changes table lacks column(s): {', '.join(sorted(missing))}")
        df = table.copy()
        for c in ("years", "rate_mg_ha_yr", *drivers):
            df[c] = pd.to_numeric(df[c], errors="coerce")
        ok = np.isfinite(df["rate_mg_ha_yr"]) & (df["years"] > spec["data"].get("min_years", 0))
        for d in drivers:
            ok &= np.isfinite(df[d])
        layers_wanted = [lay for lay in spec["data"].get("layers", ALL_LAYERS)]
        df = df[ok & df["layer"].isin(layers_wanted)]
        elements = [e for e in spec["data"]["elements"] if (df["element"] == e).any()]
        if not elements:
            raise InputError(f"no change rates for element(s) {spec['data']['elements']}")
        df = df[df["element"].isin(elements)]
        min_rows = int(spec["data"].get("min_rows_per_layer", 10))
        counts = df.groupby(["element", "layer"]).size()
        layers = [
            lay
            for lay in layers_wanted
            if all(counts.get((e, lay), 0) >= min_rows for e in elements)
        ]
        if not layers:
            raise InputError(f"no layer has {min_rows} or more change rates for {elements}")
        dropped = [lay for lay in layers_wanted if lay not in layers and (df["layer"] == lay).any()]
        df = df[df["layer"].isin(layers)].reset_index(drop=True)

        grp = df.groupby(["element", "layer"])["rate_mg_ha_yr"]
        y_loc, y_scale = grp.mean(), grp.std(ddof=0).replace(0.0, 1.0)
        keys = list(zip(df["element"], df["layer"], strict=True))
        y = (df["rate_mg_ha_yr"].to_numpy() - y_loc.loc[keys].to_numpy()) / y_scale.loc[
            keys
        ].to_numpy()
        x_loc = np.array([df[d].mean() for d in drivers])
        x_scale = np.array([df[d].std(ddof=0) or 1.0 for d in drivers])
        x = (df[drivers].to_numpy(float) - x_loc) / x_scale
        q_lo, q_hi = spec["structure"].get("psi_quantiles", [0.05, 0.95])
        lo = np.quantile(x, q_lo, axis=0)
        hi = np.quantile(x, q_hi, axis=0)
        if np.any(hi - lo <= 0):
            raise InputError("a driver does not vary in the data; no turning point can be fitted")

        adjust = [c for c in spec["structure"].get("adjust", []) if c in df.columns]
        group = (
            df[adjust].astype(str).agg("|".join, axis=1)
            if adjust
            else pd.Series(["all"] * len(df), index=df.index)
        )
        groups = sorted(pd.unique(group))
        cell_key = df["element"] + "#" + df["study_id"].astype(str) + "#" + df["layer"]
        cells = list(pd.unique(cell_key))
        e_of = {e: i for i, e in enumerate(elements)}
        l_of = {lay: i for i, lay in enumerate(layers)}
        cell_el = np.array([[e_of[k.split("#")[0]], l_of[k.split("#")[-1]]] for k in cells])
        obs_id = (
            df["profile_id"].astype(str) + "|" + df["element"] + "|" + df["layer"]
            if "profile_id" in df.columns
            else pd.Series([f"row{i}" for i in range(len(df))])
        )
        if obs_id.duplicated().any():
            obs_id = obs_id + "|" + pd.Series(np.arange(len(df)).astype(str))
        arrays = {
            "rate": y,
            "x": x,
            "inv_decades": 10.0 / df["years"].to_numpy(float),
            "element_idx": index_of(df["element"], elements),
            "layer_idx": index_of(df["layer"], layers),
            "study_cell_idx": index_of(cell_key, cells),
            "group_idx": index_of(group, groups),
            "study_cell_element": cell_el[:, 0],
            "study_cell_layer": cell_el[:, 1],
            "psi_lo": lo,
            "psi_hi": hi,
        }
        coords = {
            "element": elements,
            "driver": drivers,
            "layer": layers,
            "group": groups,
            "study_cell": cells,
            "obs_id": obs_id.tolist(),
        }
        meta = {
            "y_loc": np.array([[y_loc[(e, lay)] for lay in layers] for e in elements]),
            "y_scale": np.array([[y_scale[(e, lay)] for lay in layers] for e in elements]),
            "x_loc": x_loc,
            "x_scale": x_scale,
            "psi_bounds": {
                d: [float(lo[j] * x_scale[j] + x_loc[j]), float(hi[j] * x_scale[j] + x_loc[j])]
                for j, d in enumerate(drivers)
            },
            "dropped_layers": dropped,
            "element_of_obs": df["element"].to_numpy(),
        }
        return ModelData(coords=coords, arrays=arrays, meta=meta, n_obs=len(df))

    # ---- model ------------------------------------------------------------------------
    def build(self, data: ModelData) -> pm.Model:
        import pymc as pm
        import pytensor.tensor as pt

        pri = self.spec["priors"]
        struct = self.spec["structure"]
        a = data.arrays
        drivers = data.coords["driver"]
        hinged = [d for d in self.breaks() if d in drivers]
        with pm.Model(coords=data.coords) as model:
            pm.Data("element_idx", a["element_idx"], dims="obs_id")
            pm.Data("layer_idx", a["layer_idx"], dims="obs_id")
            x = pm.Data("x", a["x"], dims=("obs_id", "driver"))
            inv_dec = pm.Data("inv_decades", a["inv_decades"], dims="obs_id")

            n_l = len(data.coords["layer"])
            n_gr = len(data.coords["group"])
            el = pm.Data(
                "element_layer_idx", a["element_idx"] * n_l + a["layer_idx"], dims="obs_id"
            )
            egl = pm.Data(
                "element_group_layer_idx",
                (a["element_idx"] * n_gr + a["group_idx"]) * n_l + a["layer_idx"],
                dims="obs_id",
            )
            # intercept per element x group (vegetation x stage by default) x layer: the change
            # rate also carries the age trajectory F(t)/t, which differs by vegetation and stage
            c = pm.Normal("c", 0.0, pri["intercept_sd"], dims=("element", "group", "layer"))
            m = c.flatten()[egl]
            width = float(struct.get("hinge_smoothness", 0.0))
            for j, d in enumerate(drivers):
                xd = x[:, j]
                if d in hinged:
                    lo, hi = float(a["psi_lo"][j]), float(a["psi_hi"][j])
                    z0 = pm.Normal(f"psi_loc_{d}", 0.0, pri["psi_loc_sd"], dims="element")
                    # fixed pooling scale: a free tau over four layers makes a funnel where a
                    # driver has no turning point (psi unidentified), e.g. MAT beside MAP.
                    # psi_loc_sd and tau_psi are small enough (total logit sd < 1) that the prior
                    # of psi is unimodal in the middle of the range: where the data are silent
                    # psi's posterior is that wide prior, not two spikes at the range ends
                    tau = pt.as_tensor(np.full(len(data.coords["element"]), pri["tau_psi"]))
                    z = pm.Normal(
                        f"psi_logit_{d}", z0[:, None], tau[:, None], dims=("element", "layer")
                    )
                    psi = pm.Deterministic(
                        f"psi_std_{d}",
                        lo + (hi - lo) * pm.math.sigmoid(z),
                        dims=("element", "layer"),
                    )
                    # mean slope and change of slope (k2 - k1), the change shrunk towards 0:
                    # "no turning point" is the null, and with a change near 0 psi only sees its
                    # prior instead of dragging the slopes along (no ridge between psi and k)
                    kbar = pm.Normal(
                        f"k_mean_std_{d}", 0.0, pri["slope_sd"], dims=("element", "layer")
                    )
                    csd = float(pri["change_sd"])
                    if len(hinged) > 1:  # a driver co-varying with another one: see docstring
                        csd = float(pri.get("change_sd_beside_other", {}).get(d, csd))
                    dk = pm.Normal(f"k_change_std_{d}", 0.0, csd, dims=("element", "layer"))
                    pm.Deterministic(f"k1_std_{d}", kbar - dk / 2, dims=("element", "layer"))
                    pm.Deterministic(f"k2_std_{d}", kbar + dk / 2, dims=("element", "layer"))

                    def vee(t):
                        if width > 0:  # smooth |t| within ~width standardised units
                            return 2.0 * width * pt.softplus(t / width) - t
                        return pt.abs(t)

                    # k1 min(t, 0) + k2 max(t, 0) = kbar t + dk |t| / 2 with t = x - psi; minus
                    # its value at the driver's mean (x = 0), so the intercepts are rates at the
                    # mean driver and do not slide along with psi
                    psi_o = psi.flatten()[el]
                    m = (
                        m
                        + kbar.flatten()[el] * xd
                        + dk.flatten()[el] / 2 * (vee(xd - psi_o) - vee(psi_o))
                    )
                else:
                    k = pm.Normal(f"k_std_{d}", 0.0, pri["slope_sd"], dims=("element", "layer"))
                    m = m + k.flatten()[el] * xd
            if struct.get("study_effects", True):
                sd_study = pm.HalfNormal("sd_study", pri["sd_study"], dims=("element", "layer"))
                u_raw = pm.Normal("study_eff_raw", 0.0, 1.0, dims="study_cell")
                u = pm.Deterministic(
                    "study_eff",
                    u_raw * sd_study[a["study_cell_element"], a["study_cell_layer"]],
                    dims="study_cell",
                )
                s_i = pm.Data("study_cell_idx", a["study_cell_idx"], dims="obs_id")
                m = m + u[s_i]
            sigma = pm.HalfNormal("sigma", pri["sigma"], dims=("element", "layer"))
            sigma_meas = pm.HalfNormal("sigma_meas", pri["sigma_meas"], dims=("element", "layer"))
            s = pt.sqrt(sigma.flatten()[el] ** 2 + (sigma_meas.flatten()[el] * inv_dec) ** 2)
            # one nu: a per-row nu would evaluate gammaln/digamma per row (5x slower)
            nu = pm.Gamma("nu", alpha=pri["nu_alpha"], beta=pri["nu_beta"])
            pm.StudentT("rate", nu=nu, mu=m, sigma=s, observed=a["rate"], dims="obs_id")
        return model

    # ---- derived quantities ---------------------------------------------------------------
    def derived(self, posterior: xr.Dataset, data: ModelData) -> xr.Dataset:
        import xarray as xr

        c = data.coords
        y_scale = xr.DataArray(
            data.meta["y_scale"],
            dims=("element", "layer"),
            coords={"element": c["element"], "layer": c["layer"]},
        )
        out: dict[str, Any] = {}
        hinged = [d for d in self.breaks() if d in c["driver"]]
        linear = [d for d in c["driver"] if d not in hinged]
        for name, ds in (("psi", hinged), ("k1", hinged), ("k2", hinged), ("k", linear)):
            if not ds:
                continue
            parts = []
            for d in ds:
                j = c["driver"].index(d)
                xs, xl = data.meta["x_scale"][j], data.meta["x_loc"][j]
                if name == "psi":
                    v = posterior[f"psi_std_{d}"] * xs + xl
                else:
                    v = posterior[f"{name}_std_{d}"] * y_scale / xs
                parts.append(v.expand_dims(driver=[d]))
            da = xr.concat(parts, dim="driver").transpose(..., "element", "driver", "layer")
            out[name] = da
        if "psi" in out and {"C", "N"} <= set(c["element"]):
            out["psi_diff"] = out["psi"].sel(element="C", drop=True) - out["psi"].sel(
                element="N", drop=True
            )
        ds = xr.Dataset(out)
        for name in ("psi", "psi_diff"):
            if name in ds:
                ds[name].attrs["units"] = "driver units (map_mm: mm; mat_c: degC)"
        for name in ("k1", "k2", "k"):
            if name in ds:
                ds[name].attrs["units"] = "Mg ha-1 yr-1 per driver unit"
        return ds

    # ---- fit: the break model plus its LOO comparison -----------------------------------
    def no_break_spec(self, drop: list[str] | None = None) -> dict:
        """Spec of the comparison model: no hinge in ``drop`` (default: in any driver)."""
        keep = [d for d in self.breaks() if drop is not None and d not in drop]
        return deep_merge(self.spec, {"structure": {"breaks": keep, "compare_no_break": False}})

    def extra_attrs(self, dt: xr.DataTree, data: ModelData, settings) -> dict:
        attrs: dict[str, Any] = {
            "psi_bounds": json.dumps(data.meta["psi_bounds"]),
            "dropped_layers": json.dumps(data.meta["dropped_layers"]),
            "breaks": json.dumps(self.breaks()),
        }
        hinged = self.breaks()
        if not (self.spec["structure"].get("compare_no_break", True) and hinged):
            return attrs
        # reference models: no break at all; with two hinges also "all but driver d"
        refs = {"all": self.no_break_spec()}
        if len(hinged) == 1:
            refs = {hinged[0]: refs["all"]}
        elif self.spec["structure"].get("compare_per_driver", False):
            for d in hinged:
                refs[d] = self.no_break_spec(drop=[d])
        elements = list(data.coords["element"])
        elem_of_obs = data.meta["element_of_obs"]
        full_ll = dt["log_likelihood"].to_dataset()
        diff: dict[str, dict[str, float]] = {e: {} for e in elements}
        diff_se: dict[str, dict[str, float]] = {e: {} for e in elements}
        ref_verdicts: dict[str, str] = {}
        bad_k: dict[str, int] = {}
        from bayes_soil import fits
        from bayes_soil.models.base import add_pointwise

        for key, spec in refs.items():
            ref = ClimateBreakpoints(spec)
            model = ref.build(data)
            ref_dt = sample_model(model, settings, progressbar=False)
            ref_verdicts[key] = fits.check_diagnostics(ref_dt)["verdict"]
            add_pointwise(ref_dt, model, ref.observed, settings)
            ref_ll = ref_dt["log_likelihood"].to_dataset()
            for e in elements:
                mask = elem_of_obs == e
                d, se, nk = elpd_difference(full_ll, ref_ll, mask)
                diff[e][key] = d
                diff_se[e][key] = se
                bad_k[f"{e}:{key}"] = nk
        attrs.update(
            loo_elpd_diff=json.dumps(diff, sort_keys=True),
            loo_elpd_diff_se=json.dumps(diff_se, sort_keys=True),
            loo_reference_models=json.dumps(
                {k: f"no hinge in {'any driver' if k == 'all' else k}" for k in refs}
            ),
            loo_reference_verdicts=json.dumps(ref_verdicts),
            loo_bad_pareto_k=json.dumps(bad_k),
            loo_note="elpd_diff = elpd(break model) - elpd(reference); positive favours the "
            "break; |diff| < 2 SE is no clear evidence",
        )
        return attrs


def elpd_difference(
    full_ll: xr.Dataset, ref_ll: xr.Dataset, mask: np.ndarray, var: str = "rate"
) -> tuple[float, float, int]:
    """PSIS-LOO elpd(full) - elpd(ref) over the observations in ``mask``, its SE, bad k count.

    The SE is that of the paired pointwise differences, sqrt(n) x sd(diff) (Vehtari et al. 2017).
    """
    import arviz_stats as azs
    import xarray as xr

    def pointwise(ll: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
        sub = ll[[var]].isel(obs_id=np.flatnonzero(mask)).astype("float64")
        import warnings

        # the pointwise draws are thinned (every k-th draw), nearly independent: r_eff = 1
        with warnings.catch_warnings():  # high Pareto k is counted and stored instead
            warnings.simplefilter("ignore", UserWarning)
            res = azs.loo(
                xr.DataTree.from_dict({"log_likelihood": sub}),
                pointwise=True,
                reff=1.0,
                var_name=var,
            )
        return np.asarray(res.elpd_i.values), np.asarray(res.pareto_k.values)

    a, ka = pointwise(full_ll)
    b, kb = pointwise(ref_ll)
    dd = a - b
    n = dd.size
    return float(dd.sum()), float(np.sqrt(n) * dd.std(ddof=1)), int(((ka > 0.7) | (kb > 0.7)).sum())


__all__ = ["ClimateBreakpoints", "elpd_difference"]
