"""``ml-dash view`` and ``ml-dash export-html`` (added to cli.py's parser)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_commands(sub: Any) -> None:
    v = sub.add_parser("view", help="open a web dashboard of the runs in a .dash folder (read-only)",
                       description="Serve a read-only dashboard of ROOT: runs table, charts, compare, logs, "
                                   "tracks, files; live while training writes. Prints the URL it serves on.")
    v.add_argument("root", nargs="?", default=".dash", help="the .dash folder (default: .dash)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    v.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default: 0)")
    v.add_argument("--no-open", dest="open", action="store_false", help="do not open a browser")
    v.set_defaults(func=_cmd_view)

    e = sub.add_parser("export-html", help="write a static copy of runs' pages that opens from file:// offline")
    e.add_argument("prefix", nargs="+", help="run prefixes (project/name)")
    e.add_argument("--root", default=".dash", help="the .dash folder (default: .dash)")
    e.add_argument("-o", "--output", required=True, help="folder to write (created; must be empty if it exists)")
    e.add_argument("--points", type=int, default=500, help="x buckets per chart and run (min/max kept; default 500)")
    e.set_defaults(func=_cmd_export)


def _cmd_view(args: argparse.Namespace) -> int:
    try:
        from . import view
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        print(f"ml-dash view needs the server extra: pip install './packages/core[server]' ({e})", file=sys.stderr)
        return 2
    try:
        view(args.root, args.host, args.port, args.open)
    except FileNotFoundError as e:
        print(f"ml-dash view: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .data import BadName, NotFound
    from .export import export_html

    try:
        out = export_html(args.prefix, args.root, args.output, points=args.points)
    except (FileNotFoundError, FileExistsError, ValueError, NotFound, BadName) as e:
        print(f"ml-dash export-html: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} (open it in a browser; it needs no server and no network)")
    return 0
