"""The ``ml-dash`` command: ``serve``, ``login``, ``sync`` (remote mode); ``ls``, ``show``, ``export`` (reading runs)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ml-dash", description="ml-dash experiment tracking")
    sub = p.add_subparsers(dest="command", required=True)
    from .read_cli import add_commands as add_read_commands

    add_read_commands(sub)
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
