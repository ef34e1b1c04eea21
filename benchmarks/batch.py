"""Cohort batch inference on one machine: the plain loop, two shards + merge, and Ray with 1 and 2 actors.

The 40-case cohort (built once under ``--work``): the real CTs beside the clone (``../shared/real-ct``:
COPDGene 10002K as NIfTI and as DICOM, the abdomen CT as NIfTI and its no-lung DICOM series) and the
three NSCLC-Radiomics DICOM series under ``data/external/nsclc-radiomics`` where present, four broken
inputs (a truncated ``.nii.gz``, a text file named ``.nii.gz``, an empty DICOM folder, a missing path)
and synthetic patients (:func:`lungseg.synthetic.make_phantom`, 256 matrix) for the rest.

Each run is ``lungseg predict --manifest M --statistics`` as its own process (what a user runs):

* ``plain``: one process (ONNX Runtime with as many threads as cores);
* ``shards``: ``--shard 0/2`` then ``--shard 1/2`` into one folder, then ``lungseg merge-results``;
* ``ray1``: ``--ray local --actors 1 --cpus-per-actor 2``; ``ray2``: ``--ray local --actors 2 --cpus-per-actor 1``.

Measured per run: wall time of the process (Ray's start-up included), cases per minute, seconds to
the first finished case, the steady rate between the first and the last finished case, the peak
resident memory of the driver process and (Ray) of each actor (logged by :mod:`lungseg.inference.ray_batch`).
Checked: every run's table (runtime columns aside) and every mask equal the plain loop's; broken
inputs are failed rows; a ``ray2`` run whose driver is SIGKILLed half-way, then rerun, recomputes no
completed case (counts and report timestamps); a ``ray2`` run in which one actor process is SIGKILLed
still finishes every case (Ray restarts the actor and retries its case).

The model: ``--model`` (a ``.keras`` file with ``--params`` for its configs, or a bundle folder), by
default ``models/model.keras`` with ``params.yaml`` of this repository, else of ``/work/run20``; a bare
``.keras`` becomes a bundle with its ONNX twin under ``--work``. With no trained model, an untrained
U-Net of the default size (base 16 filters, depth 3, 64^3: the real compute, meaningless masks) is
used and the output says so.

Prints ``name: value`` lines and a Markdown table; writes ``--work/batch.json``.
Usage: ``.venv/bin/python benchmarks/batch.py [--model M [--params P]] [--work DIR] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "real-ct"
NSCLC = REPO / "data" / "external" / "nsclc-radiomics"
N_CASES = 40
RUNTIME = ("runtime_s", "finished_at")
# `lungseg` that prints its own peak RSS at exit (the parent's wait4 ru_maxrss would count the
# benchmark process it was forked from)
WRAP = ("import atexit, sys\n"
        "atexit.register(lambda: print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].strip(),"
        " flush=True))\n"
        "from lungseg.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
MODES = {
    "plain": [],
    "ray1": ["--ray", "local", "--actors", "1", "--cpus-per-actor", "2"],
    "ray2": ["--ray", "local", "--actors", "2", "--cpus-per-actor", "1"],
}


# --------------------------------------------------------------------------- inputs


def make_cohort(work: Path) -> Path:
    """The 40-case manifest (module docstring); written once, reused."""
    from lungseg.io.nifti import write_nifti
    from lungseg.synthetic import make_phantom

    manifest = work / "manifest.csv"
    if manifest.is_file():
        return manifest
    rows = []
    for name, path in [("copdgene-10002k-nifti", REAL / "copdgene-10002k" / "ct.nii.gz"),
                       ("copdgene-10002k-dicom", REAL / "copdgene-10002k" / "dicom"),
                       ("abdomen-nifti", REAL / "abdomen-lung-bases" / "ct.nii.gz"),
                       ("abdomen-no-lung-dicom", REAL / "abdomen-lung-bases" / "no-lung-dicom"),
                       *((f"nsclc-{d.name}", d / "dicom") for d in sorted(NSCLC.glob("LUNG1-*")))]:
        if path.exists():
            rows.append((name, str(path)))
    broken = work / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "empty-dicom").mkdir(exist_ok=True)
    (broken / "not-nifti.nii.gz").write_text("this is a text file\n")
    synthetic = work / "synthetic"
    synthetic.mkdir(exist_ok=True)
    n_synthetic = N_CASES - len(rows) - 4
    for i in range(n_synthetic):
        ph = make_phantom(np.random.default_rng([2026, i]), i % 3 == 0, max_matrix=256)
        write_nifti(ph.hu, ph.geometry, synthetic / f"s{i:02d}.nii.gz", np.int16)
        rows.append((f"synthetic-{i:02d}", f"synthetic/s{i:02d}.nii.gz"))
    good = (synthetic / "s00.nii.gz").read_bytes()
    (broken / "truncated.nii.gz").write_bytes(good[: len(good) // 3])
    rows += [("broken-truncated", "broken/truncated.nii.gz"), ("broken-not-nifti", "broken/not-nifti.nii.gz"),
             ("broken-empty-dicom", "broken/empty-dicom"), ("broken-missing", "broken/missing.nii.gz")]
    manifest.write_text("id,path\n" + "".join(f"{i},{p}\n" for i, p in rows))
    return manifest


def resolve_model(model: str | None, params: str | None, work: Path) -> tuple[Path, str]:
    """(bundle folder with ONNX networks, a line saying which model it is)."""
    from lungseg.config import PostprocessConfig, PreprocessConfig, load_params
    from lungseg.inference.segmenter import write_bundle

    bundle = work / "bundle"
    if model is None:
        for root in (REPO, Path("/work/run20")):
            if (root / "models" / "model.keras").is_file():
                model, params = str(root / "models" / "model.keras"), str(root / "params.yaml")
                break
    if model is not None and Path(model).is_dir():
        return Path(model), f"bundle {model}"
    if model is not None:
        p = load_params(params) if params else None
        pre, post = (p.preprocess, p.postprocess) if p else (PreprocessConfig(), PostprocessConfig())
        refine = Path(model).with_name("refine.keras")
        ref = (refine, p.refine) if p and p.refine.enabled and refine.is_file() else None
        write_bundle(bundle, Path(model), pre, post, refine=ref)
        return bundle, f"trained model {model} (configs of {params}), as a bundle with its ONNX twin"
    import keras

    from lungseg.nn.model import build_unet3d

    keras.utils.set_random_seed(0)
    pre = PreprocessConfig()
    build_unet3d(pre.shape, base_filters=16, depth=3, dropout=0.0).save(work / "untrained.keras")
    write_bundle(bundle, work / "untrained.keras", pre, PostprocessConfig())
    return bundle, ("NO TRAINED MODEL FOUND: an untrained U-Net of the default size (base 16, depth 3, 64^3): "
                    "real compute, meaningless masks")


# --------------------------------------------------------------------------- runs


def _session_pids(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _rows(table: Path) -> int:
    try:
        return max(0, len(table.read_text().splitlines()) - 1)
    except OSError:
        return 0


def predict(args: list[str], out: Path, log: Path, kill_driver_at: int = 0, kill_actor_at: int = 0) -> dict:
    """Run ``lungseg predict`` (its own session); optionally SIGKILL the driver, or one Ray actor,
    once the table holds that many rows. Returns wall time, peak RSS, log facts."""
    cmd = [sys.executable, "-c", WRAP, "predict", *args, "--out", str(out)]
    table = out / "results.csv"
    start = time.time()
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    killed = None
    while (kill_driver_at or kill_actor_at) and proc.poll() is None:
        n = _rows(table)
        if kill_driver_at and n >= kill_driver_at:
            os.kill(proc.pid, signal.SIGKILL)
            rows = read_table(table)
            killed = {"what": "driver", "rows": len(rows), "ok_rows": sum(r["status"] == "ok" for r in rows)}
            break
        if kill_actor_at and n >= kill_actor_at:
            actors = [p for p in _session_pids(proc.pid) if "MapWorker(MapBatches(CaseSegmenter))" in _cmdline(p)]
            if actors:
                os.kill(actors[0], signal.SIGKILL)
                killed = {"what": f"actor pid {actors[0]}", "rows": n}
                kill_actor_at = 0
        time.sleep(0.05)
    _, status, _ = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if killed and killed["what"] == "driver":
        time.sleep(2)
        for pid in _session_pids(proc.pid):  # Ray's agents outlive a killed driver
            os.kill(pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    actors = re.search(r"peak resident memory per actor \(MiB\): (.*)", text)
    hwm = re.search(r"VmHWM:\s+(\d+) kB", text)
    resumed = re.search(r"(\d+) cases(?: in shard \S+)?: (\d+) complete from an earlier run, (\d+) to segment", text)
    return {"wall_s": wall, "start": start, "exit": os.waitstatus_to_exitcode(status),
            "driver_peak_rss_mib": int(hwm.group(1)) / 1024 if hwm else float("nan"), "killed": killed,
            "actor_peak_rss_mib": [float(x.rsplit(" ", 1)[1]) for x in actors.group(1).split(", ")] if actors else [],
            "complete_before": int(resumed.group(2)) if resumed else None,
            "to_segment": int(resumed.group(3)) if resumed else None}


def read_table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def strip(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in RUNTIME} for r in rows]


def timing(rows: list[dict[str, str]], start: float, wall: float) -> dict:
    """Cases/min overall; seconds to the first finished case; steady cases/min between the first and the last."""
    ends = sorted(datetime.fromisoformat(r["finished_at"]).timestamp() for r in rows if r["finished_at"])
    steady = (len(ends) - 1) / (ends[-1] - ends[0]) * 60 if len(ends) > 1 and ends[-1] > ends[0] else float("nan")
    return {"cases": len(rows), "cases_per_min": len(rows) / wall * 60, "first_case_s": ends[0] - start,
            "steady_cases_per_min": steady}


def same_masks(a: Path, b: Path, ids: list[str]) -> list[str]:
    """Ids whose masks differ between output folders ``a`` and ``b``."""
    from lungseg.io.nifti import read_nifti

    differ = []
    for i in ids:
        x, _ = read_nifti(a / i / f"{i}_lungs.nii.gz")
        y, _ = read_nifti(b / i / f"{i}_lungs.nii.gz")
        if x.shape != y.shape or not np.array_equal(x, y):
            differ.append(i)
    return differ


def host() -> str:
    info = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*: (.*)", info)
    flags = set(re.search(r"flags\s*: (.*)", info).group(1).split()) if "flags" in info else set()
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return f"{model.group(1) if model else '?'}, {os.cpu_count()} cores, flags {' '.join(simd)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--params")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lungseg-bench-batch"))
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per mode (interleaved)")
    args = parser.parse_args()
    work = args.work.absolute()
    work.mkdir(parents=True, exist_ok=True)
    manifest = make_cohort(work)
    bundle, model_line = resolve_model(args.model, args.params, work)
    base = ["--manifest", str(manifest), "--model", str(bundle), "--statistics"]
    runs = work / "runs"
    import shutil

    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()
    print(f"host: {host()}; load average at start {os.getloadavg()[0]:.1f}")
    print(f"model: {model_line}")
    result: dict = {"host": host(), "model": model_line, "timed": {}}

    timed: dict[str, list[dict]] = {m: [] for m in MODES}
    for r in range(args.repeats):
        for mode, extra in MODES.items():
            out = runs / f"{mode}-{r}"
            run = predict([*base, *extra], out, runs / f"{mode}-{r}.log")
            rows = read_table(out / "results.csv")
            run.update(timing(rows, run["start"], run["wall_s"]))
            timed[mode].append(run)
            print(f"{mode} run {r}: {run['wall_s']:.1f} s, {run['cases_per_min']:.1f} cases/min, first case after "
                  f"{run['first_case_s']:.1f} s, steady {run['steady_cases_per_min']:.1f} cases/min, driver peak "
                  f"{run['driver_peak_rss_mib']:.0f} MiB, actors {run['actor_peak_rss_mib']} MiB", flush=True)
    result["timed"] = timed
    plain_rows = strip(read_table(runs / "plain-0" / "results.csv"))
    ok = [r["id"] for r in plain_rows if r["status"] == "ok"]
    failed = {r["id"]: r["error"] for r in plain_rows if r["status"] != "ok"}
    print(f"cases: {len(plain_rows)}, ok {len(ok)}, failed {len(failed)}: "
          + "; ".join(f"{k}: {v[:90]}" for k, v in failed.items()))

    # shards + merge
    for k in (0, 1):
        predict([*base, "--shard", f"{k}/2"], runs / "shards", runs / f"shard-{k}.log")
    subprocess.run([sys.executable, "-m", "lungseg.cli", "merge-results", str(runs / "shards"), "--out",
                    str(runs / "merged.csv")], check=True)
    checks = {"shards+merge": (runs / "merged.csv", runs / "shards")}
    for mode in MODES:
        for r in range(args.repeats):
            checks[f"{mode} run {r}"] = (runs / f"{mode}-{r}" / "results.csv", runs / f"{mode}-{r}")

    # kill the Ray driver half-way, rerun
    killed = predict([*base, *MODES["ray2"]], runs / "killed", runs / "killed-1.log", kill_driver_at=N_CASES // 2)
    reports = {p.parent.name: p.stat().st_mtime_ns
               for p in (runs / "killed").glob("*/*.json") if p.stem == p.parent.name}
    rerun = predict([*base, *MODES["ray2"]], runs / "killed", runs / "killed-2.log")
    after = {i: (runs / "killed" / i / f"{i}.json").stat().st_mtime_ns for i in reports}
    kept = sum(after[i] == t for i, t in reports.items())
    recomputed = sum(1 for p in (runs / "killed").glob("*/*.json") if p.stem == p.parent.name) - kept
    result["kill_and_resume"] = {"at_kill": killed["killed"],
                                 "complete_at_kill": len(reports), "rerun_found_complete": rerun["complete_before"],
                                 "rerun_segmented": rerun["to_segment"], "reports_unchanged": kept,
                                 "reports_written_by_rerun": recomputed, "rerun_wall_s": rerun["wall_s"]}
    print(f"kill-and-resume: {result['kill_and_resume']}")
    checks["killed+rerun"] = (runs / "killed" / "results.csv", runs / "killed")

    # kill one actor process mid-run
    lost = predict([*base, *MODES["ray2"]], runs / "actor-lost", runs / "actor-lost.log", kill_actor_at=5)
    result["actor_killed"] = {"killed": lost["killed"], "exit": lost["exit"], "wall_s": lost["wall_s"]}
    print(f"actor killed mid-run: {result['actor_killed']}")
    checks["actor killed"] = (runs / "actor-lost" / "results.csv", runs / "actor-lost")

    identical = {}
    for name, (table, folder) in checks.items():
        rows = strip(read_table(table))
        identical[name] = {"table": rows == plain_rows, "masks_differ": same_masks(runs / "plain-0", folder, ok)}
        print(f"same as plain: {name}: table {identical[name]['table']}, masks differing "
              f"{identical[name]['masks_differ'] or 'none'}")
    result["identical"] = identical

    def median(mode: str, key: str) -> float:
        return float(np.median([r[key] for r in timed[mode]]))

    plain_rate = median("plain", "cases_per_min")
    print("\n| run | wall s | cases/min | vs plain | first case s | steady cases/min | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for mode in MODES:
        rss = ", ".join(f"{x:.0f}" for x in timed[mode][-1]["actor_peak_rss_mib"]) or "-"
        print(f"| {mode} | {median(mode, 'wall_s'):.1f} | {median(mode, 'cases_per_min'):.1f} | "
              f"{median(mode, 'cases_per_min') / plain_rate:.2f}x | {median(mode, 'first_case_s'):.1f} | "
              f"{median(mode, 'steady_cases_per_min'):.1f} | driver {median(mode, 'driver_peak_rss_mib'):.0f}"
              f"{'; actors ' + rss if mode != 'plain' else ''} |")
    overhead = median("ray2", "first_case_s") - median("plain", "first_case_s")
    print(f"\nray start-up overhead (first case, ray2 - plain): {overhead:.1f} s")
    best = max(MODES, key=lambda m: median(m, "steady_cases_per_min"))
    rate = median(best, "steady_cases_per_min")
    print(f"projection (not measured): N such 2-core machines on one Ray cluster ~ N x {rate:.0f} cases/min "
          f"at the steady rate of {best} (+ ~{median(best, 'first_case_s'):.0f} s start-up), if the shared file "
          "system keeps up; e.g. 10 machines: ~{:.0f} cases/min, 10,000 such cases in ~{:.1f} h".format(
              10 * rate, 10_000 / (10 * rate) / 60))
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    (work / "batch.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
