"""Sections on the frequentist reproduction: Table 1 (Kruskal-Wallis), the OLS stage rates, the
segmented regressions and their figures (drawn by ``freq_figures``)."""

from __future__ import annotations

from bayes_soil import schema
from bayes_soil.frequentist.kruskal import FACTORS
from bayes_soil.report import figure_embed
from bayes_soil.report.html_parts import (
    details_html,
    esc,
    table_html,
)
from bayes_soil.report.inputs import ReportInputs


def table1_section(inp: ReportInputs) -> str:
    kr = inp.freq.get("kruskal")
    if kr is None or len(kr) == 0:
        return "<p>No Kruskal-Wallis table (frequentist results missing).</p>"
    resp = ", ".join(sorted({str(r) for r in kr["response"].dropna()}))
    wide = kr.pivot_table(
        index=["element", "layer"], columns="factor", values=["H", "p"], aggfunc="first", sort=False
    )
    wide.columns = [f"{f} {stat}" for stat, f in wide.columns]
    order = [f"{f} {s}" for f in FACTORS for s in ("H", "p")]
    wide = wide[[c for c in order if c in wide.columns]].reset_index()
    return (
        f"<p>Kruskal-Wallis H (tie-corrected) and p for differences in {esc(resp)} between "
        "vegetation types, stages and the combined vegetation x stage groups, per element and "
        "layer (the paper's Table 1). The third test is Kruskal-Wallis on the combined groups, "
        "not an interaction test; with one vegetation type it repeats the stage test.</p>"
        + table_html(wide)
        + details_html("long format with df and n", table_html(kr))
    )


def freq_section(inp: ReportInputs) -> str:
    out = []
    rates = inp.freq.get("rates")
    if rates is not None and len(rates):
        all_veg = rates[rates["vegetation"] == "all"]
        out.append("<h3>Stage-wise rates (OLS of stock on years within each stage, Eq. 6-7)</h3>")
        out.append(
            "<p class='meta'>All vegetation pooled; slopes k in Mg ha-1 yr-1 with the 95% CI of "
            "the OLS slope (ci_low, ci_high; rows iid, as R's lm) and the 95% CI, study cluster "
            "bootstrap (ci95_cluster_low, ci95_cluster_high; studies resampled, which respects "
            "the clustering of rows). The per-vegetation table is folded below.</p>"
        )
        cols = [
            "element",
            "layer",
            "stage",
            "k",
            "se",
            "ci_low",
            "ci_high",
            "ci95_cluster_low",
            "ci95_cluster_high",
            "p",
            "n",
            "n_studies",
            "status",
            "reason",
        ]
        out.append(table_html(all_veg, cols))
        out.append(
            details_html(
                "rates for every vegetation type",
                table_html(
                    rates[rates["vegetation"] != "all"],
                    ["element", "layer", "vegetation", *cols[2:]],
                ),
            )
        )
    else:
        out.append("<p>No frequentist rates.</p>")
    bps = inp.freq.get("breakpoints")
    out.append("<h3>Segmented regression of change rates on climate (Davies test)</h3>")
    if bps is not None and len(bps):
        out.append(
            "<p class='meta'>psi +- psi_se: segmented's delta-method SE (rows iid); "
            "psi_ci95_cluster_low/high: psi's 95% CI, study cluster bootstrap. "
            "driver_correlation: Pearson r of MAP and MAT over the rows used; better_driver: the "
            "driver whose segmented fit has the higher R^2; note: where the drivers co-vary, a "
            "turning point may be carried by the other driver.</p>"
        )
        extra = ["psi_ci95_cluster_low", "psi_ci95_cluster_high", "driver_correlation"]
        extra += ["better_driver", "status", "reason", "note"]
        out.append(table_html(bps, [*schema.BREAKPOINT_COLUMNS, *extra]))
    else:
        out.append("<p>No breakpoint table.</p>")
    out.append(_freq_figures(inp))
    return "\n".join(out)


def _freq_figures(inp: ReportInputs) -> str:
    """Figures of the frequentist side, drawn by ``bayes_soil.report.freq_figures``."""
    from bayes_soil.report import freq_figures as ff

    out = []
    syn = inp.synthetic
    layers = getattr(inp.harmonized, "layers", None)
    changes = getattr(inp.harmonized, "changes", None)
    rates, ratios, bps = (inp.freq.get(k) for k in ("rates", "rate_ratios", "breakpoints"))
    if layers is not None and len(layers):
        for el in [e for e in schema.ELEMENTS if e in set(layers["element"])]:
            out.append(
                figure_embed.figure_html(
                    lambda el=el: ff.fig_stocks(layers, el, synthetic=syn),
                    f"{el} stocks by stage and vegetation, one panel per layer (as the paper's "
                    "Figs 2-3).",
                    f"stocks {el}",
                )
            )
    if rates is not None and len(rates):
        out.append(
            figure_embed.figure_html(
                lambda: ff.fig_rates(rates, synthetic=syn),
                "OLS stage rates with their 95% CIs (as the paper's Fig 4).",
                "frequentist rates",
            )
        )
    if ratios is not None and len(ratios) and ff.has_n_ratios(ratios):  # no N: no empty panels
        out.append(
            figure_embed.figure_html(
                lambda: ff.fig_rate_ratios(ratios, synthetic=syn),
                "C:N rate ratios k_C / k_N of the OLS slopes (as Fig 5).",
                "frequentist rate ratios",
            )
        )
    if bps is not None and len(bps) and changes is not None and len(changes):
        for drv in schema.DRIVERS:
            out.append(
                figure_embed.figure_html(
                    lambda drv=drv: ff.fig_breakpoints(changes, bps, drv, synthetic=syn),
                    f"Change rate against {drv}: one-breakpoint segmented regression with psi ± "
                    "1.96 SE and the Davies test (as Figs 6-7).",
                    f"segmented {drv}",
                )
            )
    return "\n".join(out)
