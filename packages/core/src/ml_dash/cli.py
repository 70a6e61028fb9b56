"""The ``ml-dash`` command: ``serve``, ``login``, ``sync`` (remote mode), ``show`` (read a local run)."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_show(args: argparse.Namespace) -> int:
    from .reader import list_experiments, load

    if not args.prefix:
        for p in list_experiments(args.root):
            v = load(p, args.root)
            print(f"{p}\t{v.status}")
        return 0
    v = load(args.prefix, args.root)
    print(json.dumps({"prefix": v.prefix, "status": v.status, "params": v.params.get(),
                      "metrics": {n: len(v.metrics(n).read()) for n in v.metrics.names()},
                      "logs": len(v.logs.read()), "tracks": v.tracks.topics(),
                      "files": [f["path"].rstrip("/") + "/" + f["filename"] for f in v.files.list()]}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ml-dash", description="ml-dash experiment tracking")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("show", help="list the runs under a root, or summarise one run")
    s.add_argument("prefix", nargs="?")
    s.add_argument("--root", default=".dash")
    s.set_defaults(func=_cmd_show)
    try:
        from .remote_cli import add_commands
    except ImportError:
        pass
    else:
        add_commands(sub)
    from .viewer.cli import add_commands as add_viewer_commands

    add_viewer_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
