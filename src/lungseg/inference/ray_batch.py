"""``lungseg predict --ray``: a cohort's cases on Ray (optional extra ``lungseg[ray]``).

Ray Data turns the cases still to run (:func:`lungseg.inference.cohort.plan`) into a dataset of one case per
block and maps it through a fixed pool of actors (:class:`CaseSegmenter`, ``ActorPoolStrategy``): each
actor loads the Segmenter once, with as many ONNX Runtime threads as it has CPUs, then reads,
segments and writes each case on its own machine with :func:`lungseg.inference.cohort.run_case`, the function
of the plain loop, and returns the table row. The driver streams the rows into the results table as
they come (progress bar) and writes nothing else. Outputs therefore go to a folder every worker sees
at the same path (a shared file system on a cluster), and so must the inputs and the model.

An actor lost with its machine or process (killed, out of memory) is restarted and its case retried
(:data:`TASK_RETRIES` times); a case that still fails is a ``failed`` row, the others go on.
``address``: ``auto`` (``RAY_ADDRESS``, else a cluster started with ``ray start`` on this machine,
else a new local Ray), ``local`` (always a new local Ray) or a cluster's ``HOST:PORT`` /
``ray://HOST:10001``. ``device="gpu"``: one actor per GPU (Keras on TensorFlow's GPU).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.errors import LungsegError
from lungseg.inference.cohort import Case, CaseOptions, ModelSpec, ResultsTable, failed_row, run_case

log = logging.getLogger(__name__)

TASK_RETRIES = 2  # per case, after its actor died; then it is a failed row


@dataclass
class RayRun:
    """What :func:`run_ray` did: the pool, and the peak resident memory (MiB) per actor process."""

    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)


class CaseSegmenter:
    """A Ray Data actor: loads the Segmenter once; each call segments its batch of cases.

    Args:
        spec: The model (the same on every actor).
        out: The cohort's output folder (seen by every worker at this path).
        options: What is written per case.
        fp: The run's fingerprint (:func:`lungseg.inference.cohort.fingerprint`).
        threads: ONNX Runtime intra-op threads (the actor's CPUs).
    """

    def __init__(self, spec: ModelSpec, out: str, options: CaseOptions, fp: str, threads: int) -> None:
        from lungseg.inference.batch import import_case_modules

        self.segmenter = spec.load(threads=threads)
        self.out, self.options, self.fp = Path(out), options, fp
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        import_case_modules(True, options.output_types)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [run_case(self.segmenter, Case(str(i), Path(str(p))), self.out, self.options, self.fp)
                for i, p in zip(batch["id"], batch["path"])]
        peak = _peak_rss_mib()
        return {"row": np.array([json.dumps(r) for r in rows]), "worker": np.array([self.worker] * len(rows)),
                "peak_rss_mib": np.full(len(rows), peak)}


def _peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` (Linux), else ``ru_maxrss`` (which on
    Linux also counts what the process was forked from)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _init(address: str) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(address=None if address == "auto" else address, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=True)
    except Exception as e:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError from Ray
        raise LungsegError(f"--ray {address}: cannot start or reach Ray ({type(e).__name__}: {e})") from e


def run_ray(
    cases: Sequence[Case], out: Path, spec: ModelSpec, options: CaseOptions, fp: str, table: ResultsTable,
    address: str = "auto", actors: int | None = None, cpus_per_actor: float | None = None, progress: bool = True,
) -> RayRun:
    """Run ``cases`` on Ray, appending each row to ``table`` as it arrives.

    Args:
        actors: Actors in the pool (default: the cluster's CPUs / ``cpus_per_actor``; with
            ``spec.device == "gpu"`` its GPUs).
        cpus_per_actor: CPUs reserved per actor, also its ONNX Runtime threads (default 1).

    Raises:
        LungsegError: Ray is not installed or not reachable, no GPU for ``device="gpu"``, or the
            actors cannot start (e.g. lungseg is not installed on the workers).
    """
    try:
        import ray
        from ray.data import ActorPoolStrategy, DataContext
    except ImportError as e:
        raise LungsegError("--ray needs Ray: pip install 'lungseg[ray]'") from e
    from tqdm import tqdm

    if not cases:
        return RayRun(0, 0, 0)
    _init(address)
    try:
        resources = ray.cluster_resources()
        cpus = float(cpus_per_actor or 1)
        gpus = 1.0 if spec.device == "gpu" else 0.0
        if gpus and not resources.get("GPU"):
            raise LungsegError("--device gpu with --ray: the Ray cluster has no GPUs")
        n = actors or max(1, int(resources.get("GPU", 0) if gpus else resources.get("CPU", 1) // cpus))
        n = min(n, len(cases))
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts cases
        ctx.max_errored_blocks = -1  # a case lost TASK_RETRIES + 1 times becomes a failed row below
        ctx.print_on_execution_start = False
        ds = ray.data.from_items([{"id": c.id, "path": str(c.path)} for c in cases], override_num_blocks=len(cases))
        with warnings.catch_warnings():  # Ray 2.60 names no parameter for these two yet (deprecated **ray_remote_args)
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map_batches(
                CaseSegmenter, batch_size=1, num_cpus=cpus, num_gpus=gpus,
                compute=ActorPoolStrategy(size=n, max_tasks_in_flight_per_actor=1),
                fn_constructor_kwargs={"spec": spec, "out": str(out), "options": options, "fp": fp,
                                       "threads": max(1, int(cpus))},
                max_restarts=-1, max_task_retries=TASK_RETRIES,
            )
        run = RayRun(n, cpus, gpus)
        seen: set[str] = set()
        log.info("Ray: %d cases on %d actors (%g CPU, %g GPU each)", len(cases), n, cpus, gpus)
        with tqdm(total=len(cases), desc="predict (ray)", unit="case", disable=not progress) as bar:
            for item in ds.iter_rows():
                row: dict[str, Any] = json.loads(item["row"])
                table.append(row)
                seen.add(row["id"])
                run.peak_rss_mib[item["worker"]] = max(run.peak_rss_mib.get(item["worker"], 0.0),
                                                       float(item["peak_rss_mib"]))
                bar.update()
    except LungsegError:
        raise
    except Exception as e:  # noqa: BLE001 - Ray's own errors: one line for the user
        first = (str(e).strip().splitlines() or [""])[0]
        raise LungsegError(f"Ray: {type(e).__name__}: {first}") from e
    finally:
        ray.shutdown()
    if run.peak_rss_mib:
        log.info("Ray: peak resident memory per actor (MiB): %s",
                 ", ".join(f"{w} {m:.0f}" for w, m in sorted(run.peak_rss_mib.items())))
    for case in cases:
        if case.id not in seen:
            run.lost.append(case.id)
            table.append(failed_row(case, f"lost on Ray: its worker died {TASK_RETRIES + 1} times "
                                          "(out of memory? see the Ray logs); a rerun tries it again"))
    return run
