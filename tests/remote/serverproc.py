"""The server processes the remote tests start: `Server` (the `.dash` folder engine) and `PgServer` (PostgreSQL
with file contents in an S3 bucket). A module of its own, so that tests import it by a unique name."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import rt

TOKEN = "test-token-123"


class Server:
    """One server process; ``kill()`` is SIGKILL, ``start()`` starts it again on the same port and root."""

    def __init__(self, root: Path, log: Path, *extra: str, token: str | None = TOKEN,
                 env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env = env or {}
        self.port = rt.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.extra = list(extra)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.preexec: Any = None  # run in the server process before it starts (resource limits)
        self._started = False  # once started, the port is kept (clients hold the URL)

    def start(self) -> Server:
        """Start the process and wait (generously: test machines are small and shared) until /health answers.
        The port was free when chosen, but another process may take it before the server binds it: a first start
        then moves to another free port, a restart (clients hold the URL) waits for the same port to be free."""
        for attempt in range(10):
            if self._start_once():
                self._started = True
                return self
            if not self._started:
                self.port = rt.free_port()
                self.url = f"http://127.0.0.1:{self.port}"
            else:
                time.sleep(0.5 * (attempt + 1))
        raise RuntimeError(f"port {self.port} stayed in use: {self.log.read_text()[-3000:]}")

    def _start_once(self) -> bool:
        """True once the server answers; False when it exited because its port was taken."""
        cmd = [sys.executable, "-m", "ml_dash.cli", "serve", "--root", str(self.store), "--port", str(self.port)]
        if self.token:
            cmd += ["--token", self.token]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
        env.update(self.env)
        seen = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(cmd + self.extra, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     env=env, preexec_fn=self.preexec)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(self.log, "rb") as f:
                    f.seek(seen)
                    said = f.read().decode(errors="replace")
                self.proc = None
                if "address already in use" in said.lower():
                    return False
                raise RuntimeError(f"server exited: {said}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    self._warm_up()
                    return True
            except httpx.HTTPError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not come up within 120 s: {self.log.read_text()[-3000:]}")

    def _warm_up(self) -> None:
        """Wait until a worker process is ready to store (it opens the engine as it starts): a body that is not
        JSON goes through a worker and stores nothing. Tests then meet a server in its usual state; on a loaded
        machine a fresh one's first write can take longer than the client's timeout. Not done for a server told
        to fail or stall requests (that would shift or hold its pattern)."""
        if any(flag in self.extra for flag in ("--fault-every", "--stall-every")):
            return
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        r = httpx.post(self.url + "/api/v1/experiments/warm%2Fup/logs", content=b"not json", headers=headers,
                       timeout=120)
        assert r.status_code in (400, 401, 404, 413, 422, 503), (r.status_code, r.text)

    @property
    def store(self) -> Path:
        return self.root

    def break_stream(self, prefix: str, metric: str) -> Any:
        """Make every append to one metric stream fail on the server (HTTP 500); returns the repair."""
        bad = self.root.joinpath(*prefix.split("/"), "metrics", metric, "data.jsonl")
        bad.mkdir(parents=True)  # a folder where the server appends
        return lambda: shutil.rmtree(bad)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # generous: a freshly started server's first requests import and connect (seconds), more on a loaded machine
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


class PgServer(Server):
    """A server on PostgreSQL: ``root`` is a fresh `.dash` copy of the database (readable while it is down)."""

    def __init__(self, store: Path, log: Path, *extra: str, token: str | None, database: str, files: str,
                 env: dict[str, str]) -> None:
        super().__init__(store, log, *extra, "--database", database, "--files", files, token=token, env=env)
        self._store = store
        self.database = database
        self.files = files
        self._copies = 0

    @property  # type: ignore[override]
    def store(self) -> Path:
        return self._store

    @property  # type: ignore[override]
    def root(self) -> Path:
        from ml_dash.server import open_backend

        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            backend = open_backend(str(self._store), self.database, self.files)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        try:
            from ml_dash.server.dump import dump

            self._copies += 1
            dest = self._store.parent / f"{self._store.name}.copy{self._copies}"
            dump(backend, dest)
            return dest
        finally:
            backend.close()

    @root.setter
    def root(self, value: Path) -> None:
        pass

    def break_stream(self, prefix: str, metric: str) -> Any:
        """A trigger refusing every row of that stream (HTTP 500); returns the repair."""
        import psycopg

        with psycopg.connect(self.database, autocommit=True) as conn:
            conn.execute("""CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                IF EXISTS (SELECT 1 FROM streams s JOIN experiments e ON e.id = s.exp_id WHERE s.id = NEW.stream_id
                           AND e.prefix = TG_ARGV[0] AND s.kind = 'metrics' AND s.name = TG_ARGV[1])
                THEN RAISE EXCEPTION 'broken stream (a test)'; END IF; RETURN NEW; END $$""")
            conn.execute(f"CREATE TRIGGER test_broken BEFORE INSERT ON stream_rows FOR EACH ROW "
                         f"EXECUTE FUNCTION test_refuse('{prefix}', '{metric}')")

        def repair() -> None:
            with psycopg.connect(self.database, autocommit=True) as conn:
                conn.execute("DROP TRIGGER test_broken ON stream_rows")
                conn.execute("DROP FUNCTION test_refuse()")
        return repair
