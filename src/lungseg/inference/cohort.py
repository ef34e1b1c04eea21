"""Cohort-scale ``lungseg predict``: many cases, one folder per case, one results table; resumable,
shardable for job arrays (``--shard I/N``), and the same per-case work on Ray (:mod:`lungseg.inference.ray_batch`).

Cases. A manifest is a CSV file with a header holding the columns ``id`` and ``path`` (a NIfTI file or
a DICOM series folder; a relative path is taken relative to the manifest's folder; other columns are
ignored). ``--scan DIR`` walks DIR once: every ``.nii``/``.nii.gz`` file and every folder holding DICOM
files (``DICM`` at byte 128, or a ``.dcm`` name) is a case, whose id is its path relative to DIR with
``/`` written ``__`` (and without ``.nii``/``.nii.gz``). Ids name folders, so they are sanitised to
``[A-Za-z0-9._-]`` (:func:`sanitise_id`); they come from the manifest or the folder tree, never from
DICOM tags (no patient names or IDs unless the manifest holds them).

Outputs. ``OUT/<id>/`` holds the case's outputs, named as :func:`lungseg.inference.batch.segment_case` names them
with the id (``<id>_lungs.nii.gz``, ...), and its report ``<id>.json``, written last and atomically,
recording the input path, the run's :func:`fingerprint` (model files, configs, options) and the
outputs. A case is *complete* when that report parses, names the same input and fingerprint, and
every output it lists exists: a rerun skips complete cases and runs the others again (failed ones
included), so a killed run loses only the cases in flight.

Table. ``OUT/results.csv`` (``results-shard-I-of-N.csv`` for a shard; :data:`COLUMNS`): one row per
case, ``status`` ``ok`` or ``failed`` with the ``error``. A row is appended (flushed and fsynced) as
each case finishes; at the start of a run the table is rebuilt from the reports of the complete cases
(the reports are the source of truth, so rows never repeat), and at the end it is rewritten sorted
by id. :func:`merge_results` joins the tables of the shards of a job array.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lungseg.errors import LungsegError
from lungseg.fileio import atomic_write_text
from lungseg.inference.batch import (
    check_output_types,
    configure,
    import_case_modules,
    segment_case,
    unique_names,
)
from lungseg.inference.densitometry import MEASURES, REGIONS, flatten

if TYPE_CHECKING:
    from lungseg.inference.segmenter import Segmenter

log = logging.getLogger(__name__)

RESULTS = "results.csv"
BASE_COLUMNS = ("id", "input", "status", "error", "right_ml", "left_ml", "total_ml", "warnings", "runtime_s",
                "finished_at")
STATISTICS_COLUMNS = tuple(f"{r}_{m}" for r in REGIONS for m in MEASURES)
COLUMNS = BASE_COLUMNS + STATISTICS_COLUMNS  # the densitometry columns only with --statistics
RUNTIME_COLUMNS = ("runtime_s", "finished_at")  # differ between two runs of the same cases
NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
SHARD_TABLE = re.compile(r"results-shard-(\d+)-of-(\d+)\.csv$")

Row = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One input of a cohort: its (sanitised) id and its NIfTI file or DICOM folder."""

    id: str
    path: Path


@dataclass(frozen=True)
class CaseOptions:
    """What is written per case (``lungseg predict``'s ``--output-type``, ``--statistics``, ``--overlay``)."""

    output_types: tuple[str, ...] = ("nifti",)
    statistics: bool = False
    overlay: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """How to load the :class:`~lungseg.inference.segmenter.Segmenter` anywhere (this process, a Ray worker).

    Attributes:
        path: A local ``.keras`` file or bundle folder (an MLflow URI is downloaded first).
        params_path: ``params.yaml`` for the configs of a bare ``.keras`` without its JSON.
        device: ``auto``, ``cpu`` or ``gpu`` (:func:`lungseg.inference.segmenter.load_network`).
        threshold: Overrides the model's threshold (:func:`lungseg.inference.batch.configure`).
        postprocess: False: threshold only.
    """

    path: str
    params_path: str | None = None
    device: str = "auto"
    threshold: float | None = None
    postprocess: bool = True

    def load(self, threads: int | None = None) -> Segmenter:
        """The configured Segmenter; ``threads``: ONNX Runtime intra-op threads per network (default: all cores)."""
        from lungseg.inference.segmenter import Segmenter
        from lungseg.nn.onnx_model import OnnxModel

        segmenter = configure(Segmenter.load(self.path, params_path=self.params_path, device=self.device),
                              self.threshold, self.postprocess)
        if threads:
            for holder in (segmenter, segmenter.refiner):
                if holder is not None and isinstance(holder.model, OnnxModel):
                    holder.model = OnnxModel(holder.model.path, threads)
        return segmenter

    def files(self) -> list[Path]:
        """The files the Segmenter is made of: networks (``.keras``, ``.onnx``), their config JSON or,
        without one, ``params_path``.

        Raises:
            LungsegError: no model at ``path``.
        """
        from lungseg.inference.bundle import REFINE_FILE, find_bundle

        model, cfg = find_bundle(self.path)
        if not model.is_file():
            raise LungsegError(f"{model}: no such model file")
        refine = model.parent / REFINE_FILE
        found = [model, model.with_suffix(".onnx"), *([cfg] if cfg else []), refine, refine.with_suffix(".onnx")]
        if cfg is None and self.params_path and Path(self.params_path).is_file():
            found.append(Path(self.params_path))
        return [f for f in found if f.is_file()]


# --------------------------------------------------------------------------- cases


def sanitise_id(text: str) -> str:
    """A case id safe as a folder name: ``[A-Za-z0-9._-]`` only, no leading dot, at most 100 characters.

    Raises:
        LungsegError: nothing is left of ``text``.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text.strip()).lstrip(".")[:100]
    if not safe.strip("_"):
        raise LungsegError(f"case id {text!r}: no letters or digits to name a folder with")
    return safe


def _check_unique(cases: Sequence[Case], source: str) -> list[Case]:
    seen: dict[str, Case] = {}
    for c in cases:
        other = seen.get(c.id.lower())
        if other is not None:
            raise LungsegError(f"{source}: case id {c.id!r} twice ({other.path} and {c.path}; ids are compared "
                               "case-insensitively, after sanitising)")
        seen[c.id.lower()] = c
    return list(cases)


def read_manifest(path: str | Path) -> list[Case]:
    """Cases of a manifest CSV (columns ``id`` and ``path``; relative paths from the manifest's folder).

    Raises:
        LungsegError: unreadable file, missing columns, an empty id or path, a repeated id.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise LungsegError(f"{path}: cannot read the manifest ({e.strerror or e})") from e
    reader = csv.DictReader(io.StringIO(text))
    names = {(n or "").strip().lower(): n for n in reader.fieldnames or []}
    if "id" not in names or "path" not in names:
        raise LungsegError(f"{path}: a manifest needs a header with the columns id and path, got {reader.fieldnames}")
    cases = []
    for line, row in enumerate(reader, start=2):
        case_id, where = (row.get(names["id"]) or "").strip(), (row.get(names["path"]) or "").strip()
        if not case_id and not where:
            continue  # a blank line
        if not case_id or not where:
            raise LungsegError(f"{path}, line {line}: empty {'id' if not case_id else 'path'}")
        p = Path(where).expanduser()
        cases.append(Case(sanitise_id(case_id), p if p.is_absolute() else (path.parent / p).absolute()))
    return _check_unique(cases, str(path))


def _holds_dicom(folder: Path, files: Sequence[str]) -> bool:
    for name in files[:3]:
        if name.lower().endswith(".dcm"):
            return True
        try:
            with open(folder / name, "rb") as f:
                if f.read(132)[128:] == b"DICM":
                    return True
        except OSError:
            continue
    return False


def scan_folder(root: str | Path, skip: str | Path | None = None) -> list[Case]:
    """Cases under ``root`` (one walk; hidden files and folders skipped, and ``skip``: the output folder):
    each NIfTI file and each folder holding DICOM files (not looked into further:
    :func:`lungseg.inference.segmenter.load_ct` reads its whole tree); ids from the relative path (module
    docstring), sorted.

    Raises:
        LungsegError: ``root`` is not a folder, or two cases get the same id.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise LungsegError(f"--scan {root}: not a folder")
    skipped = Path(skip).absolute() if skip is not None else None
    cases = []

    def rel_id(p: Path) -> str:
        rel = p.relative_to(root)
        return sanitise_id("__".join(rel.parts) if rel.parts else root.name)

    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and here / d != skipped)
        files = sorted(f for f in filenames if not f.startswith("."))
        if _holds_dicom(here, files):
            cases.append(Case(rel_id(here), here))
            dirnames[:] = []
            continue
        cases += [Case(rel_id(here / NIFTI.sub("", f)), here / f) for f in files if NIFTI.search(f)]
    return _check_unique(sorted(cases, key=lambda c: c.id), f"--scan {root}")


def collect_cases(paths: Sequence[str | Path] = (), manifest: str | Path | None = None,
                  scan: str | Path | None = None, out: str | Path | None = None) -> list[Case]:
    """The cases of plain paths (ids from :func:`lungseg.inference.batch.unique_names`), a manifest and a scanned
    folder (without the output folder ``out`` if it lies inside), in that order.

    Raises:
        LungsegError: no cases, or two with the same id.
    """
    plain = [Path(p).absolute() for p in paths]
    cases = [Case(sanitise_id(n), p) for p, n in zip(plain, unique_names(plain))]
    if manifest is not None:
        cases += read_manifest(manifest)
    if scan is not None:
        cases += scan_folder(scan, skip=out)
    if not cases:
        raise LungsegError("no cases: give input paths, --manifest FILE or --scan DIR")
    return _check_unique(cases, "the inputs")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``.

    Raises:
        LungsegError: anything else.
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None or not int(m.group(1)) < int(m.group(2)):
        raise LungsegError(f"--shard {text}: expected I/N with 0 <= I < N (e.g. $SLURM_ARRAY_TASK_ID/8)")
    return int(m.group(1)), int(m.group(2))


def shard_of(case_id: str, count: int) -> int:
    """The shard (0 to ``count - 1``) a case belongs to: sha256 of its id modulo ``count``
    (deterministic on every machine; independent of the order and number of cases)."""
    return int(hashlib.sha256(case_id.encode()).hexdigest(), 16) % count


def table_path(out: Path, shard: tuple[int, int] | None = None) -> Path:
    """``OUT/results.csv``, or ``OUT/results-shard-I-of-N.csv`` for a shard (shards may share OUT)."""
    return out / (RESULTS if shard is None else f"results-shard-{shard[0]}-of-{shard[1]}.csv")


# --------------------------------------------------------------------------- one case


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(spec: ModelSpec, options: CaseOptions) -> str:
    """What a case's outputs depend on besides its input: the model's files (contents, not paths), the
    threshold and post-processing options and the output options; 16 hex digits of sha256."""
    content = {"files": {f.name: _sha256(f) for f in spec.files()}, "threshold": spec.threshold,
               "postprocess": spec.postprocess, "options": asdict(options)}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def report_path(out: Path, case_id: str) -> Path:
    """The report that marks a case complete: ``OUT/<id>/<id>.json``."""
    return out / case_id / f"{case_id}.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def failed_row(case: Case, error: str, seconds: float = 0.0) -> Row:
    """The table row of a case that failed."""
    return {"id": case.id, "input": str(case.path), "status": "failed", "error": error,
            "runtime_s": round(seconds, 3), "finished_at": _now()}


def row_from_report(out: Path, report: Mapping[str, Any]) -> Row:
    """The table row of a complete case, from its report (and statistics JSON) in ``OUT``: the same
    row whether the case finished just now or in an earlier run."""
    case_id = report["id"]
    row = {"id": case_id, "input": report["input"], "status": "ok", "error": "",
           **{f"{k}_ml": v for k, v in report["volumes_ml"].items()}, "warnings": "; ".join(report["warnings"]),
           "runtime_s": report["timings_s"]["total"], "finished_at": report["finished_at"]}
    if "statistics" in report["outputs"]:
        row.update(flatten(json.loads((out / case_id / report["outputs"]["statistics"]).read_text())))
    return row


def completed_row(out: Path, case: Case, fp: str) -> Row | None:
    """The row of a complete case (module docstring), or None when it has to be (re)computed."""
    path = report_path(out, case.id)
    try:
        report = json.loads(path.read_text())
        if (report.get("fingerprint") != fp or report.get("id") != case.id or report.get("input") != str(case.path)
                or not report["outputs"] or not all((path.parent / n).is_file() for n in report["outputs"].values())):
            return None
        return row_from_report(out, report)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def run_case(segmenter: Segmenter, case: Case, out: Path, options: CaseOptions, fp: str) -> Row:
    """Segment one case into ``OUT/<id>/`` and return its table row; never raises for a bad case.

    The one per-case function of the plain loop, the shards and the Ray actors. An old report is removed
    first, so it never vouches for outputs being rewritten; the new one is written last
    (:func:`lungseg.inference.batch.segment_case`).
    """
    try:
        folder = out / case.id
        folder.mkdir(parents=True, exist_ok=True)
        report_path(out, case.id).unlink(missing_ok=True)
        for stale in folder.glob(".*.partial*"):  # left by a killed run's atomic writes
            stale.unlink(missing_ok=True)
        check_output_types([case.path], options.output_types)
        result = segment_case(segmenter, case.path, folder, case.id, options.output_types, options.statistics,
                              options.overlay, {"id": case.id, "fingerprint": fp})
        if result.error is not None or result.report is None:
            return failed_row(case, result.error or "no report written", result.seconds)
        return row_from_report(out, json.loads(result.report.read_text()))
    except LungsegError as e:
        return failed_row(case, str(e))
    except Exception as e:  # noqa: BLE001 - the output folder (permissions, a full disk): still one row
        return failed_row(case, f"{out / case.id}: {type(e).__name__}: {e}")


# --------------------------------------------------------------------------- the table


def _csv_text(rows: Iterable[Row], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


class ResultsTable:
    """The results CSV of a run, written as cases finish (module docstring).

    Args:
        path: The CSV file (:func:`table_path`).
        statistics: Whether the densitometry columns are there.
        rows: The rows of the cases already complete (:func:`plan`); written at once, atomically.
    """

    def __init__(self, path: Path, statistics: bool, rows: Iterable[Row] = ()) -> None:
        self.path = Path(path)
        self.columns = list(COLUMNS if statistics else BASE_COLUMNS)
        self.rows: dict[str, Row] = {r["id"]: r for r in rows}
        atomic_write_text(self.path, _csv_text(self.rows.values(), self.columns))
        self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def append(self, row: Row) -> None:
        """Add one finished case: one line, flushed and fsynced (a SIGKILL after this keeps it)."""
        self.rows[row["id"]] = row
        self._file.write(_csv_text([row], self.columns).split("\n", 1)[1])
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Rewrite the table sorted by id (atomically)."""
        self._file.close()
        atomic_write_text(self.path, _csv_text([self.rows[k] for k in sorted(self.rows)], self.columns))

    def __enter__(self) -> ResultsTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plan(cases: Sequence[Case], out: Path, fp: str) -> tuple[list[Row], list[Case]]:
    """Split ``cases`` into the rows of the complete ones and the cases still to run."""
    done, todo = [], []
    for case in cases:
        row = completed_row(out, case, fp)
        if row is None:
            todo.append(case)
        else:
            done.append(row)
    return done, todo


def run_cases(
    cases: Sequence[Case], out: Path, segmenter: Segmenter, options: CaseOptions, fp: str, table: ResultsTable,
    progress: bool = True,
) -> None:
    """The plain loop: :func:`run_case` for each case in this process, each row appended to ``table``."""
    from tqdm import tqdm

    import_case_modules(any(c.path.is_dir() for c in cases), options.output_types)
    for case in tqdm(cases, desc="predict", unit="case", disable=not progress):
        table.append(run_case(segmenter, case, out, options, fp))


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Columns and rows (text) of a results CSV.

    Raises:
        LungsegError: unreadable, or no ``id`` column.
    """
    try:
        reader = csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8")))
        rows = list(reader)
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise LungsegError(f"{path}: cannot read the results table ({e})") from e
    if "id" not in (reader.fieldnames or []):
        raise LungsegError(f"{path}: not a results table (no id column)")
    return list(reader.fieldnames or []), rows


def _tables(sources: Sequence[Path]) -> Iterator[Path]:
    for s in map(Path, sources):
        if s.is_dir():
            shards = sorted(p for p in s.iterdir() if SHARD_TABLE.fullmatch(p.name))
            yield from shards or [s / RESULTS]
        else:
            yield s


def merge_results(sources: Sequence[str | Path], out: str | Path) -> Path:
    """Join results tables (files, or folders: their shard tables, else their ``results.csv``) into one,
    rows sorted by id; ``.parquet`` for ``out`` writes Parquet (pandas' types), else CSV.

    A missing shard (``results-shard-I-of-N.csv`` for some I absent) is logged as a warning.

    Raises:
        LungsegError: an unreadable table, or one id with different rows in two tables.
    """
    tables = list(_tables([Path(s) for s in sources]))
    columns: list[str] = []
    rows: dict[str, dict[str, str]] = {}
    origin: dict[str, Path] = {}
    shards: dict[int, set[int]] = {}
    for table in tables:
        cols, table_rows = read_table(table)
        columns += [c for c in cols if c not in columns]
        if (m := SHARD_TABLE.fullmatch(table.name)) is not None:
            shards.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
        for row in table_rows:
            if row["id"] in rows and rows[row["id"]] != row:
                raise LungsegError(f"case {row['id']} has different rows in {origin[row['id']]} and {table}")
            rows[row["id"]], origin[row["id"]] = row, table
    for n, present in shards.items():
        if missing := sorted(set(range(n)) - present):
            log.warning("shards %s of %d are missing: their cases are not in the merged table",
                        ", ".join(map(str, missing)), n)
    order = [c for c in COLUMNS if c in columns] + [c for c in columns if c not in COLUMNS]
    text = _csv_text([rows[k] for k in sorted(rows)], order)
    out = Path(out)
    if out.suffix.lower() == ".parquet":
        import pandas as pd

        from lungseg.fileio import atomic_write

        with atomic_write(out, suffix=".parquet") as tmp:
            pd.read_csv(io.StringIO(text), dtype={"id": str, "input": str, "error": str, "warnings": str,
                                                  "finished_at": str}).to_parquet(tmp, index=False)
    else:
        atomic_write_text(out, text)
    log.info("%d cases from %d tables into %s", len(rows), len(tables), out)
    return out

