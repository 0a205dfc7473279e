"""Reading user tables, the identity of a dataset, and writing outputs atomically.

Readers accept CSV (UTF-8; other encodings detected with charset-normalizer and announced:
GB18030/GBK, Big5, Shift-JIS, ... as detected, Western single-byte text as latin-1), XLSX and
Parquet. Writers never leave a
half-written file: everything goes to ``.<name>.<pid>-<random>.partial`` beside the target first
and is renamed at the end; :func:`clean_partials` removes those of writers that died.

A dataset has one identity, :func:`data_identity`: the SHA-256 of its harmonized tables' content
(layers and changes). ``load_harmonized`` (file, folder or demo), ``harmonize``, ``SoilModel.fit``
and every look-up of stored fits compute it with that one function.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_soil.errors import InputError

DATASETS_DIR = Path(__file__).parent / "datasets"
DEMO_OBSERVATIONS = DATASETS_DIR / "demo_synthetic_observations.csv"
DEMO_TRUTH = DATASETS_DIR / "demo_synthetic_truth.json"
#: printed and shown with anything made from simulator output (the bundled demo or any other)
SYNTHETIC_LABEL = "SYNTHETIC data (bayes_soil simulator) - not the paper's observations"


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (a cache key and provenance; the data identity is
    :func:`data_identity`, which does not depend on the file format)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- data identity ----------------------------------------------------------------------------
#: pandas ``DataFrame.attrs`` key under which a harmonized table records the identity of the data
#: it belongs to (and its own digest, so that a modified copy is not taken for the original)
IDENTITY_ATTR = "bayes_soil_identity"
TABLE_ROLES = ("layers", "changes")


def source_hash(files: list[Path], salt: str = "", length: int = 16) -> str:
    """Short hash of source files (names and bytes), so a cache or a resumed run made by other
    code is never taken for this code's. Missing files count as absent."""
    h = hashlib.sha256(salt.encode())
    for f in sorted(files):
        if f.exists():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:length]


def table_digest(df: pd.DataFrame) -> str:
    """SHA-256 of one table's content: its CSV text as ``write_harmonized`` writes it.

    CSV text (``index=False``, ``\\n`` line ends, floats in shortest round-trip form) reads back to
    the same text, so a table and the same table written and read again have one digest.
    """
    text = df.to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _identity_from_digests(digests: dict[str, str | None]) -> str:
    h = hashlib.sha256()
    for role in TABLE_ROLES:
        h.update(f"{role}:{digests.get(role) or '-'}\n".encode())
    return h.hexdigest()


def data_identity(layers: pd.DataFrame | None, changes: pd.DataFrame | None = None) -> str:
    """The identity of a dataset (``data_sha256`` of fits, reports and freq tables).

    SHA-256 over the digests (:func:`table_digest`) of the harmonized layers and changes tables;
    a table that is absent (a model fitted on one bare frame) counts as absent, so such a fit
    never passes for one made from the whole harmonized dataset.
    """
    digests = {
        "layers": None if layers is None else table_digest(layers),
        "changes": None if changes is None else table_digest(changes),
    }
    return _identity_from_digests(digests)


def stamp_identity(layers: pd.DataFrame, changes: pd.DataFrame) -> str:
    """Compute :func:`data_identity` and record it in both tables' ``attrs``; returns it.

    A table handed on alone (``model.fit(result.layers)``) then still names the data it came
    from, as long as it is unchanged (see :func:`identity_of_table`).
    """
    digests = {"layers": table_digest(layers), "changes": table_digest(changes)}
    identity = _identity_from_digests(digests)
    for role, df in (("layers", layers), ("changes", changes)):
        df.attrs[IDENTITY_ATTR] = {"data_sha256": identity, "table_sha256": digests[role]}
    return identity


def identity_of_table(df: pd.DataFrame, role: str) -> str:
    """The data identity of one table given alone (``role``: "layers" or "changes").

    The identity of the harmonized data it belongs to when it carries that stamp and is
    unchanged (its digest still matches); otherwise the identity of this table alone.
    """
    if role not in TABLE_ROLES:
        raise ValueError(f"role must be one of {TABLE_ROLES}, got {role!r}")
    digest = table_digest(df)
    stamp = df.attrs.get(IDENTITY_ATTR)
    if isinstance(stamp, dict) and stamp.get("table_sha256") == digest:
        return str(stamp["data_sha256"])
    return _identity_from_digests({role: digest})


#: ``DataFrame.attrs`` key of an ESM table: the data identity of its fixed-depth twin
FIXED_TWIN_ATTR = "bayes_soil_fixed_depth_twin"


def stock_method_of(table: pd.DataFrame | None) -> str:
    """The stock method of a harmonized table: ``esm`` when made by ``harmonize --stocks esm``
    (its rows carry ``stock_method``: ``esm``, or ``fixed`` where ESM could not serve the row),
    else ``fixed`` (fixed-depth stocks, the paper's method)."""
    if table is not None and "stock_method" in getattr(table, "columns", ()):
        return "esm"
    return "fixed"


#: detected encodings taken as found (multi-byte East Asian text); any other non-UTF-8 text is
#: read as latin-1 (which accepts every byte) as before, and the reader says so
MULTIBYTE_ENCODINGS = (
    "gb18030",
    "gbk",
    "gb2312",
    "hz",
    "big5",
    "big5hkscs",
    "cp950",
    "shift_jis",
    "cp932",
    "euc_jp",
    "euc_kr",
    "cp949",
    "iso2022_jp",
    "utf_16",
    "utf_32",
)


def detect_encoding(raw: bytes) -> tuple[str, str | None]:
    """The encoding of a text file's bytes and, when it is not UTF-8, a note for the user.

    UTF-8 (BOM tolerated) first; otherwise charset-normalizer's best guess when it is a
    multi-byte East Asian encoding (GB18030 covers GBK and GB2312), else latin-1 (the common
    spreadsheet export). The note names the file's encoding as read.
    """
    try:
        raw.decode("utf-8-sig")
        return "utf-8-sig", None
    except UnicodeDecodeError:
        pass
    guess = _detected(raw[: 1 << 20])
    if guess in MULTIBYTE_ENCODINGS:
        try:
            raw.decode(guess)
            return guess, f"not UTF-8; read as {guess} (detected by charset-normalizer)"
        except (UnicodeDecodeError, LookupError):
            pass
    detected = f"; charset-normalizer suggested {guess}" if guess else ""
    return "latin-1", (
        f"not UTF-8; read as latin-1 (Western European){detected}. If the text looks wrong, "
        "save the file as UTF-8"
    )


def _script_share(text: str, encoding: str) -> float:
    """Share of the non-ASCII characters in the script the encoding is made for (Han for the
    Chinese encodings, Hangul for Korean, kana and Han for Japanese)."""
    chars = [ord(c) for c in text if ord(c) > 127]
    if not chars:
        return 0.0

    def han(o: int) -> bool:
        return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x3000 <= o <= 0x303F

    if encoding in ("cp949", "euc_kr"):
        hits = sum(0xAC00 <= o <= 0xD7AF or 0x3130 <= o <= 0x318F for o in chars)
    elif encoding.startswith(("shift_jis", "cp932", "euc_j", "iso2022_jp")):
        hits = sum(han(o) or 0x3040 <= o <= 0x30FF for o in chars)
    else:
        hits = sum(han(o) or 0xFF00 <= o <= 0xFFEF for o in chars)
    return hits / len(chars)


def _detected(raw: bytes) -> str | None:
    """charset-normalizer's encoding for non-UTF-8 bytes. Short East Asian text often leaves
    several encodings equally clean (GBK bytes read as Korean cp949, say); among those the one
    whose decoded text stays in its own script wins, GB18030 first on a tie."""
    from charset_normalizer import from_bytes

    matches = list(from_bytes(raw))
    if not matches:
        return None

    def norm(enc: str) -> str:
        enc = str(enc).lower().replace("-", "_")
        return "gb18030" if enc in ("gbk", "gb2312") else enc  # GB18030 reads GBK the same

    best_chaos = min(m.chaos for m in matches)
    clean = [norm(m.encoding) for m in matches if m.chaos <= best_chaos + 0.02]
    cjk = [e for e in clean if e in MULTIBYTE_ENCODINGS and not e.startswith("utf")]
    if len(cjk) < 2:
        return clean[0]
    scored = []
    for i, enc in enumerate(cjk):
        try:
            share = _script_share(raw.decode(enc), enc)
        except (UnicodeDecodeError, LookupError):
            continue
        scored.append((-share, enc != "gb18030", i, enc))
    return min(scored)[3] if scored else clean[0]


def decode_text(raw: bytes, path: Path) -> str:
    """Decode with :func:`detect_encoding` (UTF-8, a detected East Asian encoding, or latin-1)."""
    return raw.decode(detect_encoding(raw)[0])


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, XLSX or Parquet table with every column as text (validation parses numbers).

    Raises InputError naming the file when it is missing, empty or unreadable.
    """
    df, _ = read_table_with_lines(path)
    return df


# Missing-value spellings accepted in any cell (compared after strip + lower-case).
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
_DELIMITER_NAMES = {";": "semicolon", "\t": "tab", "|": "pipe"}


def read_table_with_lines(path: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a table as text plus the 1-based file line of every data row (header = line 1).

    CSV is parsed with the csv module so that line numbers stay right across blank lines and
    quoted multi-line cells; XLSX rows are spreadsheet row numbers; Parquet rows count as if the
    table were a CSV (first data row = line 2). Fully blank rows are dropped. Cells are ``str``
    or None (missing). Raises InputError naming the file (and line) for a missing, empty or
    unreadable file, a file that is not comma-separated, or rows with more cells than the header.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a CSV, XLSX or Parquet file")
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise InputError(
            f"{path}: old Excel .xls files cannot be read (openpyxl reads .xlsx only); open it "
            "in a spreadsheet program and save it as .xlsx or .csv"
        )
    try:
        if suffix in (".xlsx", ".xlsm"):
            grid = pd.read_excel(path, dtype=str, header=None)
            if grid.shape[0] == 0:
                raise InputError(f"{path}: line 1: the file is empty")
            header = [_header_cell(c, i) for i, c in enumerate(grid.iloc[0].tolist())]
            df = grid.iloc[1:].copy()
            df.columns = header
            lines = np.arange(2, grid.shape[0] + 1)
            df = df.astype(object).where(df.notna(), None)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
            for c in df.columns:  # ids stored as floats (12.0) read as "12", not "12.0"
                v = df[c]
                finite = v.dropna()
                if (
                    pd.api.types.is_float_dtype(v)
                    and (finite % 1 == 0).all()
                    and (finite.abs() < 2**53).all()
                ):
                    df[c] = v.astype("Int64")
            df = df.astype("string").astype(object).where(df.notna(), None)
            df.columns = [str(c) for c in df.columns]
            lines = np.arange(2, df.shape[0] + 2)
        else:
            raw = path.read_bytes()
            if not raw.strip():
                raise InputError(f"{path}: line 1: the file is empty")
            encoding, note = detect_encoding(raw)
            df, lines = _parse_csv_text(raw.decode(encoding), path)
            df.attrs["encoding"] = encoding
            if note:
                df.attrs["encoding_note"] = f"{path}: {note}"
    except InputError:
        raise
    except Exception as exc:  # pandas/openpyxl/pyarrow raise many types
        raise InputError(f"{path}: cannot be read as a table ({exc})") from exc
    attrs = dict(df.attrs)
    df.columns = [str(c).strip() for c in df.columns]
    df = df.reset_index(drop=True)
    blank = (df.isna() | (df.astype("string").apply(lambda c: c.str.strip()) == "")).all(axis=1)
    blank = blank.to_numpy(dtype=bool)
    if blank.any():
        df = df.loc[~blank].reset_index(drop=True)
        lines = np.asarray(lines)[~blank]
    if df.shape[0] == 0:
        raise InputError(f"{path}: line 2: the file has a header but no data rows")
    df.attrs.update(attrs)
    return df, np.asarray(lines, dtype=int)


def _header_cell(value: object, i: int) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return f"unnamed_{i + 1}"
    return str(value)


def _parse_csv_text(text: str, path: Path) -> tuple[pd.DataFrame, list[int]]:
    """Parse comma-separated text, recording the line on which each record starts."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 1
    rows: list[list[str | None]] = []
    lines: list[int] = []
    too_long: list[str] = []
    start = 1
    for record in reader:
        line = start
        start = reader.line_num + 1
        if not record or all(not c.strip() for c in record):
            continue
        if header is None:
            header, header_line = record, line
            _check_delimiter(header, path, header_line)
            continue
        if len(record) > len(header):
            extra = [c for c in record[len(header) :] if c.strip()]
            if extra:
                too_long.append(
                    f"{path}: line {line}: {len(record)} cells but the header (line "
                    f"{header_line}) has {len(header)}; extra value {extra[0]!r}"
                )
            record = record[: len(header)]
        record = record + [""] * (len(header) - len(record))
        rows.append([None if c == "" else c for c in record])
        lines.append(line)
    if header is None:
        raise InputError(f"{path}: line 1: the file is empty")
    if too_long:
        shown = too_long[:200]
        more = len(too_long) - len(shown)
        raise InputError(
            "rows with more cells than the header (a stray comma or a wrong delimiter?):\n"
            + "\n".join(shown)
            + (f"\n... and {more} more" if more else "")
        )
    return pd.DataFrame(rows, columns=header, dtype=object), lines


def _check_delimiter(header: list[str], path: Path, line: int) -> None:
    """A header that is one cell holding ';', tab or '|' means the file is not comma-separated."""
    if len(header) != 1:
        return
    cell = header[0]
    for sep, name in _DELIMITER_NAMES.items():
        if cell.count(sep) >= 1:
            raise InputError(
                f"{path}: line {line}, column {cell[:40]!r}: the file looks {name}-separated "
                f"({cell.count(sep) + 1} fields split by {sep!r}); save it as comma-separated "
                "CSV (or as XLSX/Parquet)"
            )


# ---- atomic writes ------------------------------------------------------------------------------
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:-[^.]*)?\.partial$")


def _partial_path(final: Path) -> Path:
    """A new empty temporary file beside ``final``: ``.<name>.<pid>-<random>.partial``."""
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.name}.{os.getpid()}-", suffix=".partial", dir=final.parent
    )
    os.close(fd)
    return Path(tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_partials(directory: str | Path) -> list[Path]:
    """Remove partial files left by killed writers (whose process no longer exists)."""
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for p in directory.rglob(".*.partial"):
        m = _PARTIAL.match(p.name)
        if m and not _pid_alive(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _partial_path(path)
    try:
        yield tmp_path
        _publish(tmp_path, path)
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
        tmp = _partial_path(final)
        self._staged[final] = tmp
        return tmp

    def write_csv(self, df: pd.DataFrame, name: str) -> None:
        df.to_csv(self.path(name), index=False)

    def write_json(self, obj: object, name: str) -> None:
        self.path(name).write_text(json.dumps(obj, indent=2, default=_json_default))

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            for final, tmp in self._staged.items():
                _publish(tmp, final)
        else:
            for tmp in self._staged.values():
                tmp.unlink(missing_ok=True)


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished temp file into place with ordinary permissions (mkstemp makes 0600)."""
    os.chmod(tmp, 0o644)
    os.replace(tmp, final)


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


def is_synthetic(df: pd.DataFrame) -> bool:
    """True when every row's ``source`` starts with "synthetic" (simulator output).

    Downstream code uses this to label every table, figure and report made from such data.
    """
    if "source" not in df.columns or len(df) == 0:
        return False
    src = df["source"].astype("string").str.strip().str.lower()
    return bool(src.notna().all() and src.str.startswith("synthetic").all())
