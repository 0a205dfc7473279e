"""What the report page shows: a fit with its origin, and every input of the page in one record.

``bayes_soil.workflow`` builds a :class:`ReportInputs`; the section builders only read it, so the
page can be tested on fake posteriors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import xarray as xr

from bayes_soil.compare import Comparison, fit_kind

QUICK_LABEL = (
    "QUICK MODE: the fits were run with few draws for a smoke test; the numbers below are not "
    "fit for inference"
)


@dataclass
class FitRecord:
    """A fit and where it came from (path in the store, reused or just run)."""

    dt: xr.DataTree
    path: str = ""
    origin: str = "given"  # "given", "reused from the store", "run now"

    @property
    def model(self) -> str:
        return str(self.dt.attrs.get("model", "?"))

    @property
    def verdict(self) -> str:
        return str(self.dt.attrs.get("diagnostics_verdict", "unknown"))

    @property
    def kind(self) -> str:
        return fit_kind(self.dt)


@dataclass
class ReportInputs:
    """Everything the page shows. ``harmonized`` is a HarmonizeResult (layers, changes,
    rejected, report, synthetic, data_sha256); ``freq`` the frequentist tables by name."""

    harmonized: Any
    freq: Mapping[str, pd.DataFrame]
    fits: Sequence[FitRecord] = ()
    comparison: Comparison | None = None
    data_label: str = "bundled synthetic demo"
    hdi_prob: float = 0.94
    quick: bool = False
    log: list[str] = field(default_factory=list)
    fit_errors: Mapping[str, str] = field(default_factory=dict)  # model -> why it did not run
    calibration: pd.DataFrame | None = None  # from `calibrate` folders (report --calibration)
    # ESM data only: frequentist rates and turning points on fixed depth vs ESM
    # (bayes_soil.frequentist.stock_shift.esm_vs_fixed: "rates", "breakpoints")
    stock_shift: Mapping[str, pd.DataFrame] | None = None
    title: str = "bayes_soil report: soil C and N stocks after revegetation"

    @property
    def synthetic(self) -> bool:
        from bayes_soil.report.posterior_figures import fit_is_synthetic

        return bool(getattr(self.harmonized, "synthetic", False)) or any(
            fit_is_synthetic(f.dt) for f in self.fits
        )

    def fits_of(self, kind: str) -> list[FitRecord]:
        return [f for f in self.fits if f.kind == kind]
