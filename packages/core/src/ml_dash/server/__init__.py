"""``ml-dash serve``: a self-hosted server storing runs in the `.dash` layout (``pip install ./packages/core[server]``).

Imported only by the ``serve`` command; needs starlette, uvicorn and python-multipart.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["create_app", "open_backend", "read_tokens", "serve"]


def create_app(*args: Any, **kw: Any) -> Any:
    from .app import create_app as _create

    return _create(*args, **kw)


def _check_token(tok: str, where: str) -> str:
    if not tok.strip():
        raise ValueError(f"{where} is empty or blank: refusing to start an open server (an unset variable?); "
                         "pass a real token, or no --token at all to serve without authentication on loopback")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in tok) or not tok.isascii():
        raise ValueError(f"{where} holds whitespace, control or non-ASCII characters; a token is one printable "
                         "ASCII word")
    return tok


def read_tokens(token: list[str] | None, token_file: str | None) -> list[str]:
    """Tokens from ``--token`` (repeatable) and ``--token-file`` (one per line, '#' comments). An empty or blank
    token, or a token file holding none, is refused (ValueError): it must never start an open server."""
    tokens = [_check_token(t or "", "--token") for t in token or []]
    if token_file is not None:
        found = 0
        for n, line in enumerate(Path(token_file).read_text().splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                tokens.append(_check_token(line, f"line {n} of the token file {token_file}"))
                found += 1
        if not found:
            raise ValueError(f"token file {token_file} holds no token")
    return tokens


def _lock_root(root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".ml-dash-server.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RuntimeError(f"another ml-dash server is already serving {root}") from None
    return fd


def open_backend(root: str, database: str | None = None, files: str | None = None, fsync: bool = True,
                 pool_size: int = 16) -> Any:
    """The engine ``serve`` runs on: PostgreSQL (``database``) with file contents in ``files`` (a folder or
    ``s3://bucket/prefix``; default: ``root``), else the `.dash` folder ``root``. Its ``spec`` rebuilds it in a
    worker process (`work`)."""
    backend = _open_backend(root, database, files, fsync, pool_size)
    # the schema was migrated here; a worker handles one request at a time, but its pool may grow past the 2
    # connections it keeps, so that a request after a database restart gets a new one at once
    backend.spec = (_open_backend, (root, database, files, fsync, 8, False))
    return backend


def _open_backend(root: str, database: str | None, files: str | None, fsync: bool, pool_size: int,
                  migrate: bool = True) -> Any:
    if database:
        if not database.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"--database {database!r}: a postgresql://user:password@host:port/dbname URL")
        from .objects import open_objects
        from .pg import PgBackend

        return PgBackend(database, open_objects(files or root, fsync=fsync), pool_size=pool_size, migrate=migrate)
    if files:
        raise ValueError("--files needs --database: without a database, runs and their files are stored in the "
                         "--root folder")
    from .folder import FolderBackend

    return FolderBackend(root, fsync=fsync)


def default_workers() -> int:
    """Worker processes ``serve`` starts by default: one per core, at least 2 and at most 8."""
    return max(2, min(8, os.cpu_count() or 2))


def serve(root: str, host: str = "127.0.0.1", port: int = 8000, tokens: list[str] | None = None, *,
          max_body_mb: float = 32, max_file_mb: float = 5120, fault_every: int = 0, stall_every: int = 0,
          stall_seconds: float = 0.0, log_level: str = "warning", fsync: bool = True, database: str | None = None,
          files: str | None = None, workers: int | None = None, max_inflight_mb: float | None = None,
          inflight_wait: float = 30.0) -> None:
    import uvicorn

    path = Path(root)
    fd = None
    if not database:  # one process owns a folder; any number share a database
        fd = _lock_root(path)
        from ..layout import incoming_dir

        for stale in incoming_dir(path).glob("*.part"):  # uploads cut off by a crash
            stale.unlink(missing_ok=True)
    try:
        backend = open_backend(root, database, files, fsync)
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    app = create_app(backend, tokens, max_body=int(max_body_mb * 1024 * 1024),
                     max_file=int(max_file_mb * 1024 * 1024), fault_every=fault_every, stall_every=stall_every,
                     stall_seconds=stall_seconds, fsync=fsync, workers=default_workers() if workers is None else workers,
                     max_inflight=int(max_inflight_mb * 1024 * 1024) if max_inflight_mb else None,
                     inflight_wait=inflight_wait)
    auth = f"{len(tokens)} token(s)" if tokens else "NO authentication"
    where = backend.describe() if database else str(path.resolve())
    print(f"[ML-Dash] serving {where} at http://{host}:{port} ({auth})", file=sys.stderr, flush=True)
    if not tokens and host in ("127.0.0.1", "localhost", "::1"):
        print("[ML-Dash] no token: any process on this machine can read and write (use --token or --token-file "
              "to require one)", file=sys.stderr, flush=True)
    elif not tokens:
        print("[ML-Dash] warning: no --token on a non-loopback address: anyone who can reach it can write",
              file=sys.stderr, flush=True)
    if fault_every or stall_every:
        print(f"[ML-Dash] testing aid on: fault every {fault_every}, stall every {stall_every} "
              f"for {stall_seconds}s", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                    timeout_graceful_shutdown=5)
    finally:
        backend.close()
        if fd is not None:
            os.close(fd)
