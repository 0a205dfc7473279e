"""Reading user tables and writing outputs atomically.

Readers accept CSV (UTF-8, latin-1 fallback), XLSX and Parquet. Writers never leave a
half-written file: everything goes to a temporary name first and is renamed at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from bayes_soil.errors import InputError

DATASETS_DIR = Path(__file__).parent / "datasets"
DEMO_OBSERVATIONS = DATASETS_DIR / "demo_synthetic_observations.csv"
DEMO_TRUTH = DATASETS_DIR / "demo_synthetic_truth.json"
SYNTHETIC_LABEL = "SYNTHETIC demo data (bayes_soil simulator) - not the paper's observations"


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes: the identity of a dataset in fits and reports."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def decode_text(raw: bytes, path: Path) -> str:
    """Decode as UTF-8 (BOM tolerated), falling back to latin-1 as many spreadsheets export."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, XLSX or Parquet table with every column as text (validation parses numbers).

    Raises InputError naming the file when it is missing, empty or unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".xlsx", ".xlsm", ".xls"):
            df = pd.read_excel(path, dtype=str)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
            df = df.astype("string").astype(object).where(df.notna(), None)
        else:
            raw = path.read_bytes()
            if not raw.strip():
                raise InputError(f"{path}: line 1: the file is empty")
            text = decode_text(raw, path)
            df = pd.read_csv(
                io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""]
            )
    except InputError:
        raise
    except Exception as exc:  # pandas/openpyxl/pyarrow raise many types
        raise InputError(f"{path}: cannot be read as a table ({exc})") from exc
    if df.shape[0] == 0:
        raise InputError(f"{path}: line 2: the file has a header but no data rows")
    df.columns = [str(c).strip() for c in df.columns]
    return df


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


class AtomicOutputs:
    """Stage several output files and publish them together, or none of them.

    >>> with AtomicOutputs(out_dir) as out:          # doctest: +SKIP
    ...     df.to_csv(out.path("layers.csv"), index=False)
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._staged: dict[Path, Path] = {}

    def __enter__(self) -> AtomicOutputs:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self

    def path(self, name: str) -> Path:
        """A temporary path that becomes ``directory/name`` when the block succeeds."""
        final = self.directory / name
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
        os.close(fd)
        self._staged[final] = Path(tmp)
        return Path(tmp)

    def write_csv(self, df: pd.DataFrame, name: str) -> None:
        df.to_csv(self.path(name), index=False)

    def write_json(self, obj: object, name: str) -> None:
        self.path(name).write_text(json.dumps(obj, indent=2, default=_json_default))

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            for final, tmp in self._staged.items():
                os.replace(tmp, final)
        else:
            for tmp in self._staged.values():
                tmp.unlink(missing_ok=True)


def _json_default(obj: object) -> object:
    """Make numpy scalars and arrays JSON-serialisable."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def is_demo(path: str | Path | None) -> bool:
    """True when ``path`` is the bundled synthetic demo dataset (or None, which means it)."""
    return path is None or Path(path).resolve() == DEMO_OBSERVATIONS.resolve()
