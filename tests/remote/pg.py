"""Throwaway PostgreSQL and S3 servers on loopback for the tests.

`Cluster`: a PostgreSQL cluster initialised in a temporary folder and started on a free loopback port (as the
``postgres`` user when the tests run as root, since PostgreSQL refuses to run as root), one database per test.
`MotoS3`: moto's standalone S3 server. Both are started once per test session and stopped at its end; tests that
need them are skipped, with the reason, when the software is not installed (and fail instead on CI, where
``.ci/run`` installs it).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import rt

ON_CI = os.environ.get("ML_DASH_REQUIRE_POSTGRES") == "1"  # set by .ci/run


def _missing(reason: str) -> None:
    if ON_CI:
        pytest.fail(reason + " (ML_DASH_REQUIRE_POSTGRES=1: .ci/run installs it)")
    pytest.skip(reason)


def pg_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(dirs[-1]).parent if dirs else None


class Cluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.tmp = Path(tempfile.mkdtemp(prefix="ml-dash-pg-"))
        self.data = self.tmp / "data"
        self.port = rt.free_port()
        self.user = "ml_dash"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the postgres system user
            shutil.chown(self.tmp, "postgres")
            self.tmp.chmod(0o700)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._dbs = itertools.count()

    def _run(self, *cmd: str) -> None:
        r = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=240)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stdout}{r.stderr}")

    def start(self) -> Cluster:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.tmp} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.tmp / "log"), "-o", opts,
                  "-w", "-t", "120", "start")
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        import psycopg

        name = f"t{next(self._dbs)}_{os.getpid()}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def start_cluster() -> Cluster:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        _missing("psycopg and psycopg_pool are not installed (pip install './packages/core[postgres]')")
    bindir = pg_bindir()
    if bindir is None:
        _missing("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    assert bindir is not None
    return Cluster(bindir).start()


class MotoS3:
    """moto's standalone S3 server; ``env`` points boto3 at it."""

    def __init__(self, log: Path) -> None:
        self.port = rt.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                    "AWS_DEFAULT_REGION": "us-east-1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120  # generous: test machines are small and shared
        import httpx

        while time.monotonic() < deadline:
            try:
                httpx.get(self.url, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"moto did not come up: {log.read_text()}")

    def bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.url, aws_access_key_id="test", aws_secret_access_key="test",
                     region_name="us-east-1").create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.proc.kill()  # holds nothing worth a graceful stop
        self.proc.wait(10)


def start_moto(log: Path) -> MotoS3:
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError:
        _missing("boto3 and moto[server] are not installed (pip install boto3 'moto[server]')")
    return MotoS3(log)
