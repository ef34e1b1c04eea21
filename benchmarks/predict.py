"""Prediction speed and memory on one 512x512x~130 CT, in process and served.

Prints ``name: value`` lines:

* ``lungseg predict`` on the CT given as a DICOM folder, run as its own process: wall time
  of the process, its peak RSS, and the per-case phases from the written JSON (load,
  preprocess, infer, map back, postprocess, write);
* the served model (``mlflow models serve --env-manager local`` on 127.0.0.1): p50 and p95
  latency over 20 sequential requests with the same CT as base64 .nii.gz, next to the
  in-process time of the same work (decode, segment, encode) with the same model.

The CT is a synthetic patient (:func:`lungseg.synthetic.make_phantom`) drawn until it
has a 512 matrix, resampled along the slice axis to 130 slices (same z extent), written once
under ``--work`` and reused. The model is
``--model`` (a ``.keras`` file, a saved segmenter folder or an MLflow URI), by default the
champion of the project's registry, else ``models/model.keras``.

Usage: ``.venv/bin/python benchmarks/predict.py [--model M] [--requests 20] [--work DIR]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
N_SLICES = 130


def make_case(work: Path) -> tuple[Path, Path]:
    """A 512x512x130 CT as a DICOM series folder and as .nii.gz (written once, reused)."""
    from scipy import ndimage

    from lungseg.io.dicom_write import StudyInfo, make_uid, write_ct_series
    from lungseg.io.geometry import Geometry
    from lungseg.io.nifti import write_nifti
    from lungseg.synthetic import make_phantom

    dicom, nifti = work / "ct512_dicom", work / "ct512.nii.gz"
    if (work / "done").exists():
        return dicom, nifti
    work.mkdir(parents=True, exist_ok=True)
    for seed in range(50):
        ph = make_phantom(np.random.default_rng([2024, seed]), False, max_matrix=512)
        if ph.hu.shape[0] == 512:
            break
    else:
        raise RuntimeError("no 512x512 phantom in 50 draws")
    # the scanner's slice thickness is drawn at random: resample along k to 130 slices (same z extent)
    n = ph.hu.shape[2]
    hu = ndimage.zoom(ph.hu, (1.0, 1.0, N_SLICES / n), order=1, mode="nearest", grid_mode=False)
    g = ph.geometry
    geometry = Geometry((512, 512, N_SLICES), (g.spacing_mm[0], g.spacing_mm[1], g.spacing_mm[2] * (n - 1) / (N_SLICES - 1)),
                        g.origin_lps_mm, g.direction)
    study = StudyInfo(patient_id="BENCH512", study_uid=make_uid("bench", "study"),
                      frame_of_reference_uid=make_uid("bench", "for"))
    write_ct_series(np.rint(hu), geometry, dicom / "series", study, make_uid("bench", "ct"))
    write_nifti(hu, geometry, nifti, np.int16)
    (work / "done").write_text(json.dumps({"shape": list(hu.shape), "spacing_mm": geometry.spacing_mm}))
    return dicom, nifti


def resolve_model(model: str | None, work: Path) -> tuple[str, str]:
    """(model for `lungseg predict --model`, model for `mlflow models serve -m`)."""
    from lungseg.config import load_params
    from lungseg.inference.registry import champion_uri
    from lungseg.inference.serving import download_model, save_segmenter_model

    params = load_params(REPO / "params.yaml")
    if model is None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                download_model(champion_uri(params.tracking), tmp, params.tracking)
            model = champion_uri(params.tracking)
        except Exception:  # noqa: BLE001 - no registry or no champion yet
            model = str(REPO / params.train.model_path)
    if model.startswith(("models:/", "runs:/")) or (Path(model).is_dir() and (Path(model) / "MLmodel").exists()):
        return model, model
    served = work / "served_model"
    if served.exists():
        import shutil

        shutil.rmtree(served)
    keras_file = Path(model) if Path(model).is_file() else Path(model) / "model.keras"
    cfg = keras_file.parent / "lungseg_config.json"
    if cfg.exists():
        from lungseg.inference.segmenter import read_config_json

        pre, post = read_config_json(cfg)
    else:
        pre, post = params.preprocess, params.postprocess
    save_segmenter_model(served, keras_file, pre, post)
    return model, str(served)


def evict_file_cache(*roots: Path) -> int:
    """Drop the page cache of every file under ``roots`` (``posix_fadvise`` DONTNEED, no root
    needed): the next run reads the Python packages, the model and the CT from disk, as the first
    run after a reboot would. Returns the number of files."""
    n = 0
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    n += 1
                finally:
                    os.close(fd)
    return n


def bench_cli(dicom: Path, model: str, work: Path, prefix: str = "predict") -> None:
    out = work / "predict_out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    with open(work / "predict.log", "wb") as log:
        t = time.perf_counter()
        proc = subprocess.Popen([str(BIN / "lungseg"), "predict", str(dicom), "--out", str(out), "--model", model],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    if proc.returncode != 0:
        raise RuntimeError((work / "predict.log").read_text()[-2000:])
    peak_mb = usage.ru_maxrss / 1024
    report = json.loads((out / f"{dicom.name}.json").read_text())
    tm = report["timings_s"]
    print(f"ct_shape: {'x'.join(map(str, report['shape']))}")
    print(f"ct_spacing_mm: {'x'.join(str(round(s, 3)) for s in report['spacing_mm'])}")
    print(f"{prefix}_process_wall_s: {wall:.2f}")
    print(f"{prefix}_process_peak_rss_mb: {peak_mb:.0f}")
    print(f"{prefix}_case_total_s: {tm['total']:.2f}")
    for phase in ("load", "preprocess", "infer", "map_back", "postprocess", "write"):
        print(f"{prefix}_{phase}_s: {tm[phase]:.3f}")
    print(f"{prefix}_startup_s: {wall - tm['total']:.2f}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_server(served: str, nifti: Path, requests: int, work: Path) -> None:
    from lungseg.inference.segmenter import Segmenter
    from lungseg.inference.serving import load_segmenter, segment_nifti_bytes

    payload = json.dumps({"inputs": [base64.b64encode(nifti.read_bytes()).decode()]}).encode()
    print(f"request_mb: {len(payload) / 1e6:.1f}")
    # in-process: the same work as one request (decode, segment, encode), same model
    from lungseg.config import load_params

    params = load_params(REPO / "params.yaml")
    segmenter = (load_segmenter(served, params.tracking) if served.startswith(("models:/", "runs:/"))
                 else Segmenter.load(served))
    data = nifti.read_bytes()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        segment_nifti_bytes(segmenter, data, "bench")
        times.append(time.perf_counter() - t)
    print(f"in_process_same_case_s: {float(np.median(times)):.2f}")
    del segmenter

    port = _free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if served.startswith("models:/"):
        env.setdefault("MLFLOW_TRACKING_URI", params.tracking.tracking_uri)
    log = open(work / "serve.log", "wb")
    proc = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", served, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        t = time.perf_counter()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {(work / 'serve.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        print(f"server_start_s: {time.perf_counter() - t:.1f}")
        latencies = []
        for _ in range(requests + 1):  # the first request warms up and is not counted
            req = urllib.request.Request(f"{url}/invocations", data=payload,
                                         headers={"Content-Type": "application/json"})
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=300) as r:
                reply = json.loads(r.read())
            latencies.append(time.perf_counter() - t)
        vol = reply["predictions"][0]["volume_ml"]
        lat = np.asarray(latencies[1:])
        print(f"served_requests: {len(lat)}")
        print(f"served_p50_s: {np.percentile(lat, 50):.2f}")
        print(f"served_p95_s: {np.percentile(lat, 95):.2f}")
        print(f"served_first_request_s: {latencies[0]:.2f}")
        print(f"served_volume_total_ml: {vol['total']:.1f}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="default: the registry's champion, else models/model.keras")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lungseg-bench-predict")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--cold", action="store_true",
                        help="first one run with the file cache of the venv, the project's model store and the CT dropped")
    args = parser.parse_args()
    os.chdir(REPO)
    dicom, nifti = make_case(args.work)
    model, served = resolve_model(args.model, args.work)
    print(f"model: {model}")
    print(f"cpu_cores: {os.cpu_count()}")
    if args.cold:
        roots = [Path(sys.prefix), Path(os.__file__).parent, REPO / "mlruns", REPO / "mlflow.db", REPO / "models", dicom]
        if Path(model).exists():
            roots.append(Path(model))
        print(f"cold_evicted_files: {evict_file_cache(*[r for r in roots if r.exists()])}")
        bench_cli(dicom, model, args.work, prefix="cold_predict")
    bench_cli(dicom, model, args.work)
    if not args.skip_server:
        bench_server(served, nifti, args.requests, args.work)


if __name__ == "__main__":
    main()
