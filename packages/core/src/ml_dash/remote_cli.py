"""``ml-dash serve``, ``ml-dash login`` and ``ml-dash sync``: the remote-mode commands (added to cli.py's parser)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def add_commands(sub: Any) -> None:
    s = sub.add_parser("serve", help="serve a .dash folder over HTTP (needs the [server] extra)",
                       description="Run the ml-dash server: runs logged with dash_url=... are stored under ROOT in "
                                   "the .dash layout, readable with ml_dash.load(prefix, dash_root=ROOT).")
    s.add_argument("--root", default=".dash-server", help="folder to store runs in (default: .dash-server)")
    s.add_argument("--database", default=os.environ.get("ML_DASH_DATABASE_URL") or None, metavar="URL",
                   help="store runs in PostgreSQL (postgresql://user:password@host:5432/dbname; default: "
                        "$ML_DASH_DATABASE_URL) instead of the --root folder; several servers may share one "
                        "database (needs the [postgres] extra)")
    s.add_argument("--files", default=os.environ.get("ML_DASH_FILES") or None, metavar="DIR|s3://BUCKET/PREFIX",
                   help="with --database: where file contents go, a folder or an S3-compatible bucket (default: "
                        "$ML_DASH_FILES, else the --root folder; s3:// needs the [s3] extra and reads the usual "
                        "AWS_* variables, AWS_ENDPOINT_URL for MinIO and other stores)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    s.add_argument("--token", action="append", help="accept this bearer token (repeatable)")
    s.add_argument("--token-file", help="accept the tokens in this file (one per line, '#' comments)")
    s.add_argument("--max-body-mb", type=float, default=32.0, help="largest JSON request body (default: 32 MiB)")
    s.add_argument("--max-file-mb", type=float, default=5120.0, help="largest uploaded file (default: 5 GiB)")
    s.add_argument("--no-fsync", dest="fsync", action="store_false",
                   help="do not fsync each append before answering (faster; an OS crash or power loss may then "
                        "lose batches the clients were told are stored)")
    s.add_argument("--fault-every", type=_positive_int, default=0, metavar="N",
                   help="TESTING AID: answer every Nth API request with HTTP 500 (odd ones before handling it, "
                        "even ones after, losing the answer)")
    s.add_argument("--stall-every", type=_positive_int, default=0, metavar="N",
                   help="TESTING AID: hold every Nth API request for --stall-seconds before handling it")
    s.add_argument("--stall-seconds", type=float, default=0.0, help="TESTING AID: see --stall-every")
    s.add_argument("--log-level", default="warning", help="uvicorn log level (default: warning)")
    s.set_defaults(func=_cmd_serve)

    d = sub.add_parser("dump", help="copy what a PostgreSQL-backed server stores into a .dash folder",
                       description="Write every run a database server holds (or those given with --prefix) into "
                                   "DEST in the .dash layout: a backup readable with ml_dash.load, ml-dash view "
                                   "and ml-dash export, without any server.")
    d.add_argument("dest", help="the .dash folder to write")
    d.add_argument("--database", default=os.environ.get("ML_DASH_DATABASE_URL") or None, metavar="URL",
                   help="as for serve (default: $ML_DASH_DATABASE_URL)")
    d.add_argument("--files", default=os.environ.get("ML_DASH_FILES") or None, metavar="DIR|s3://BUCKET/PREFIX",
                   help="as for serve (default: $ML_DASH_FILES)")
    d.add_argument("--prefix", action="append", help="only this run (repeatable)")
    d.set_defaults(func=_cmd_dump)

    lg = sub.add_parser("login", help="store an API token for the client (~/.dash/credentials.json, mode 0600)")
    lg.add_argument("--token", required=True, help="the token the server was started with")
    lg.add_argument("--url", help="the server it is for (also becomes the default URL of `ml-dash sync`)")
    lg.set_defaults(func=_cmd_login)

    sy = sub.add_parser("sync", help="upload what a .dash folder holds and a server does not yet have",
                        description="Upload every experiment under ROOT to the server, exactly once: what was "
                                    "already delivered (live or by an earlier sync) is skipped.")
    sy.add_argument("root", nargs="?", default=".dash", help="the local .dash folder (default: .dash)")
    sy.add_argument("--url", help="server URL, or several separated by commas (servers sharing one database: it "
                    "fails over between them); default: $ML_DASH_API_URL, else the URL of `ml-dash login --url`")
    sy.add_argument("--prefix", action="append", help="only this experiment (repeatable)")
    sy.add_argument("--attempts", type=int, default=5, help="passes per experiment before giving up (default 5)")
    sy.set_defaults(func=_cmd_sync)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .server import read_tokens, serve
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        print(f"ml-dash serve needs the server extra: pip install './packages/core[server]' ({e})", file=sys.stderr)
        return 2
    try:
        tokens = read_tokens(args.token, args.token_file)
        serve(args.root, args.host, args.port, tokens, max_body_mb=args.max_body_mb, max_file_mb=args.max_file_mb,
              fault_every=args.fault_every, stall_every=args.stall_every, stall_seconds=args.stall_seconds,
              log_level=args.log_level, fsync=args.fsync, database=args.database, files=args.files)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"ml-dash serve: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_dump(args: argparse.Namespace) -> int:
    if not args.database:
        print("ml-dash dump: no database: pass --database or set ML_DASH_DATABASE_URL", file=sys.stderr)
        return 2
    if not args.files:
        print("ml-dash dump: no file store: pass --files (as given to serve) or set ML_DASH_FILES", file=sys.stderr)
        return 2
    try:
        from .server import open_backend
        from .server.dump import dump

        backend = open_backend(args.dest, args.database, args.files)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"ml-dash dump: {e}", file=sys.stderr)
        return 1
    try:
        done = dump(backend, args.dest, args.prefix)
    finally:
        backend.close()
    missing = sorted(set(args.prefix or []) - set(done))
    print(f"ml-dash dump: {len(done)} run(s) written to {args.dest}")
    if missing:
        print(f"ml-dash dump: no run {', '.join(missing)} on that server", file=sys.stderr)
        return 1
    return 0


def _cmd_login(args: argparse.Namespace) -> int:
    from .stores.remote import save_token

    try:
        path = save_token(args.token, args.url)
    except (OSError, ValueError) as e:
        print(f"ml-dash login: {e}", file=sys.stderr)
        return 1
    where = f" for {args.url}" if args.url else ""
    print(f"token saved{where} in {path} (mode 0600)")
    return 0


def _cmd_sync(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .config import BufferConfig
    from .layout import ExperimentDir
    from .reader import list_experiments
    from .replicate import sync_dir
    from .stores.remote import RemoteStore, default_url, parse_urls

    url = args.url or default_url()
    if not url:
        print("ml-dash sync: no server URL: pass --url, set ML_DASH_API_URL, or `ml-dash login --url`",
              file=sys.stderr)
        return 2
    try:
        url = ",".join(parse_urls(url))
    except ValueError as e:
        print(f"ml-dash sync: {e}", file=sys.stderr)
        return 2
    root = Path(args.root)
    if not root.is_dir():
        print(f"ml-dash sync: no folder {root}", file=sys.stderr)
        return 2
    prefixes = args.prefix or list_experiments(root)
    config = BufferConfig()
    totals = {"logs": 0, "metrics": 0, "tracks": 0, "files": 0}
    failed = 0
    for prefix in prefixes:
        try:
            jdir = ExperimentDir(root, prefix)
            store = RemoteStore(url, jdir.prefix, config, folder=jdir.path)
        except ValueError as e:
            print(f"  {prefix}: skipped ({e})", file=sys.stderr)
            failed += 1
            continue
        try:
            rep = sync_dir(jdir, store, config, verbose=True, attempts=args.attempts)
        finally:
            store.close()
        s = rep.sent
        for k in totals:
            totals[k] += s[k]
        line = (f"  {prefix}: uploaded {s['logs']} log(s), {s['metrics']} metric row(s), {s['tracks']} track "
                f"entr(ies), {s['files']} file(s)")
        if rep.error is not None:
            failed += 1
            line += f"; NOT complete ({rep.error}); still pending: {rep.describe_pending()}{rep.describe_held_back()}"
        print(line)
    print(f"ml-dash sync: {len(prefixes) - failed} of {len(prefixes)} experiment(s) in sync with {url}; uploaded "
          f"{totals['logs']} log(s), {totals['metrics']} metric row(s), {totals['tracks']} track entr(ies), "
          f"{totals['files']} file(s)")
    return 1 if failed else 0
