"""Cohort mode of ``lungseg predict``: manifests, scans, shards, resume, the results table, merging.

The cohort and the tiny bundle come from tests/helpers/cohort.py (shared with tests/pipeline/test_ray_batch.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lungseg.cli import main
from lungseg.errors import LungsegError
from lungseg.inference.cohort import (
    RUNTIME_COLUMNS,
    Case,
    collect_cases,
    merge_results,
    parse_shard,
    read_manifest,
    sanitise_id,
    scan_folder,
    shard_of,
)
from tests.helpers.cohort import BROKEN, make_cohort, read_rows, tiny_bundle


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cohort")
    return make_cohort(tmp, 4), tiny_bundle(tmp / "model")


def _predict(manifest: Path, model: Path, out: Path, *extra: str) -> int:
    return main(["predict", "--manifest", str(manifest), "--out", str(out), "--model", str(model), "-q", *extra])


# --------------------------------------------------------------------------- cases


def test_ids_are_safe_folder_names() -> None:
    assert sanitise_id("LUNG1-001") == "LUNG1-001"
    assert sanitise_id("../../etc/passwd") == "_.._etc_passwd"
    assert sanitise_id(" a b/c\\d ") == "a_b_c_d"
    assert "/" not in sanitise_id("x/" * 80) and len(sanitise_id("x" * 300)) == 100
    with pytest.raises(LungsegError, match="no letters or digits"):
        sanitise_id("../")


def test_manifest_paths_are_relative_to_it_and_ids_unique(tmp_path: Path) -> None:
    m = tmp_path / "sub" / "m.csv"
    m.parent.mkdir()
    m.write_text("\ufeffID, Path ,site\nA,a.nii.gz,x\n\nB b,/abs/b,y\n")
    assert read_manifest(m) == [Case("A", m.parent / "a.nii.gz"), Case("B_b", Path("/abs/b"))]
    m.write_text("id,path\nA,a.nii.gz\na,b.nii.gz\n")
    with pytest.raises(LungsegError, match="case id 'a' twice"):
        read_manifest(m)
    m.write_text("name,file\nA,a\n")
    with pytest.raises(LungsegError, match="columns id and path"):
        read_manifest(m)
    m.write_text("id,path\nA,\n")
    with pytest.raises(LungsegError, match="line 2: empty path"):
        read_manifest(m)


def test_scan_finds_nifti_files_and_dicom_folders_once(tmp_path: Path) -> None:
    (tmp_path / "p1" / "series").mkdir(parents=True)
    (tmp_path / "p1" / "series" / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)  # no extension
    (tmp_path / "p1" / "series" / "deeper").mkdir()
    (tmp_path / "p1" / "series" / "deeper" / "x.nii.gz").write_bytes(b"")  # inside a DICOM folder: not a case
    (tmp_path / "p2").mkdir()
    (tmp_path / "p2" / "CT scan.nii.gz").write_bytes(b"")
    (tmp_path / "p2" / "notes.txt").write_text("x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "h.nii").write_bytes(b"")
    (tmp_path / "top.NII").write_bytes(b"")
    (tmp_path / "out" / "p2").mkdir(parents=True)  # the output folder inside: not scanned
    (tmp_path / "out" / "p2" / "p2_lungs.nii.gz").write_bytes(b"")
    cases = scan_folder(tmp_path, skip=tmp_path / "out")
    assert [(c.id, c.path.relative_to(tmp_path).as_posix()) for c in cases] == [
        ("p1__series", "p1/series"), ("p2__CT_scan", "p2/CT scan.nii.gz"), ("top", "top.NII")]
    with pytest.raises(LungsegError, match="not a folder"):
        scan_folder(tmp_path / "top.NII")


def test_paths_manifest_and_scan_together_need_distinct_ids(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.nii.gz").write_bytes(b"")
    m = tmp_path / "m.csv"
    m.write_text("id,path\nx,elsewhere.nii.gz\n")
    assert [c.id for c in collect_cases([tmp_path / "y.nii.gz"], m)] == ["y", "x"]
    with pytest.raises(LungsegError, match="case id 'x' twice"):
        collect_cases([], m, tmp_path / "d")
    with pytest.raises(LungsegError, match="no cases"):
        collect_cases([])


def test_shards_partition_the_cases_by_id() -> None:
    ids = [f"case-{i}" for i in range(200)]
    parts = [[i for i in ids if shard_of(i, 3) == k] for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(ids) and all(len(p) > 40 for p in parts)
    assert [shard_of("case-1", n) for n in (1, 7)] == [0, int(hashlib.sha256(b"case-1").hexdigest(), 16) % 7]
    assert parse_shard("1/4") == (1, 4) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("4/4", "1", "-1/3", "a/b"):
        with pytest.raises(LungsegError, match="I/N"):
            parse_shard(bad)


# --------------------------------------------------------------------------- runs


def test_broken_cases_are_rows_and_a_rerun_resumes(cohort, tmp_path: Path, capsys, caplog) -> None:
    manifest, model = cohort
    out = tmp_path / "out"
    assert _predict(manifest, model, out, "--statistics") == 1  # some cases failed: exit 1, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lungseg predict: error: 4 of 8 cases failed "
                              "(empty-dicom, missing, not-nifti, truncated)")
    rows = {r["id"]: r for r in read_rows(out / "results.csv", runtime=True)}
    assert list(rows) == sorted(rows) and len(rows) == 8  # sorted by id at the end
    for name in BROKEN:
        assert rows[name]["status"] == "failed" and rows[name]["error"], rows[name]
    assert "no such file" in rows["missing"]["error"] and "not a readable NIfTI" in rows["not-nifti"]["error"]
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 4 and all(float(r["total_ml"]) > 0 and r["total_laa950_pct"] != "" for r in ok)
    report = json.loads((out / "case-00" / "case-00.json").read_text())
    assert report["id"] == "case-00" and set(report["outputs"]) == {"nifti", "statistics"}
    assert float(rows["case-00"]["total_ml"]) == report["volumes_ml"]["total"]

    stamps = {i: (out / i / f"{i}.json").stat().st_mtime_ns for i in ("case-00", "case-01", "case-02", "case-03")}
    (out / "case-01" / "case-01_lungs.nii.gz").unlink()  # an output gone: recomputed
    (out / "case-02" / "case-02.json").write_text("{")  # a torn report: recomputed
    caplog.set_level("INFO", "lungseg")
    assert _predict(manifest, model, out, "--statistics") == 1
    assert "8 cases: 2 complete from an earlier run, 6 to segment" in caplog.text
    after = {i: (out / i / f"{i}.json").stat().st_mtime_ns for i in stamps}
    assert after["case-00"] == stamps["case-00"] and after["case-03"] == stamps["case-03"]
    assert after["case-01"] != stamps["case-01"] and (out / "case-01" / "case-01_lungs.nii.gz").is_file()
    assert read_rows(out / "results.csv") == [{k: v for k, v in r.items() if k not in RUNTIME_COLUMNS}
                                              for r in rows.values()]  # same table, no duplicates


def test_other_options_recompute_and_table_follows_the_reports(cohort, tmp_path: Path, caplog) -> None:
    manifest, model = cohort
    out = tmp_path / "out"
    _predict(manifest, model, out)
    assert "total_voxels" not in read_rows(out / "results.csv")[0]  # no --statistics: no densitometry columns
    caplog.set_level("INFO", "lungseg")
    _predict(manifest, model, out, "--threshold", "0.45")  # another threshold: another fingerprint
    assert "0 complete from an earlier run, 8 to segment" in caplog.text
    # a killed run: rows appended, unsorted, the last line torn; the next run rebuilds the table from the reports
    table = out / "results.csv"
    table.write_text(table.read_text() + table.read_text().splitlines()[1] + "\ncase-0")
    _predict(manifest, model, out, "--threshold", "0.45")
    rows = read_rows(table)
    assert [r["id"] for r in rows] == sorted({r["id"] for r in rows}) and len(rows) == 8


def test_shards_and_merge_equal_one_run(cohort, tmp_path: Path) -> None:
    manifest, model = cohort
    _predict(manifest, model, tmp_path / "all")
    for k in (0, 1):
        _predict(manifest, model, tmp_path / "shards", "--shard", f"{k}/2")  # one folder for both, two tables
    tables = sorted(p.name for p in (tmp_path / "shards").glob("results*.csv"))
    assert tables == ["results-shard-0-of-2.csv", "results-shard-1-of-2.csv"]
    assert main(["merge-results", str(tmp_path / "shards"), "--out", str(tmp_path / "merged.csv")]) == 0
    assert read_rows(tmp_path / "merged.csv") == read_rows(tmp_path / "all" / "results.csv")
    for case_id in ("case-00", "case-03"):
        a, b = (tmp_path / run / case_id / f"{case_id}_lungs.nii.gz" for run in ("all", "shards"))
        assert gzip.decompress(a.read_bytes()) == gzip.decompress(b.read_bytes())
    merge_results([tmp_path / "shards" / "results-shard-0-of-2.csv", tmp_path / "shards" / "results-shard-1-of-2.csv"],
                  tmp_path / "merged.parquet")
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "merged.parquet")
    assert list(frame["id"]) == sorted(frame["id"]) and frame["total_ml"].dtype == np.float64


def test_merge_refuses_conflicting_rows_and_warns_of_a_missing_shard(tmp_path: Path, caplog) -> None:
    a, b = tmp_path / "results-shard-0-of-3.csv", tmp_path / "other.csv"
    a.write_text("id,status\nx,ok\n")
    b.write_text("id,status\nx,failed\n")
    with pytest.raises(LungsegError, match="case x has different rows"):
        merge_results([a, b], tmp_path / "m.csv")
    merge_results([tmp_path], tmp_path / "m.csv")
    assert "shards 1, 2 of 3 are missing" in caplog.text
    assert main(["merge-results", str(tmp_path / "nothing.csv"), "--out", str(tmp_path / "m.csv")]) == 1


def test_a_dicom_output_for_a_nifti_case_is_a_row_not_a_refusal(cohort, tmp_path: Path) -> None:
    manifest, model = cohort
    assert _predict(manifest, model, tmp_path, "--output-type", "dicom-seg") == 1
    rows = read_rows(tmp_path / "results.csv")
    assert all(r["status"] == "failed" for r in rows)
    assert "needs a DICOM series folder" in rows[0]["error"]


def test_ray_options_need_ray(cohort, tmp_path: Path, capsys) -> None:
    manifest, model = cohort
    assert _predict(manifest, model, tmp_path, "--actors", "2") == 1
    assert "--actors and --cpus-per-actor need --ray" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_an_unwritable_case_folder_is_a_row_and_the_batch_goes_on(cohort, tmp_path: Path) -> None:
    manifest, model = cohort
    tmp_path.joinpath("case-00").write_text("a file where the case's folder should be\n")
    assert _predict(manifest, model, tmp_path) == 1
    rows = {r["id"]: r for r in read_rows(tmp_path / "results.csv")}
    assert rows["case-00"]["status"] == "failed" and "case-00: FileExistsError" in rows["case-00"]["error"]
    assert rows["case-01"]["status"] == "ok"
