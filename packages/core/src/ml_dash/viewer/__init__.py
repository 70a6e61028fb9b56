"""``ml-dash view``: a read-only web dashboard over a `.dash` folder (runs table, charts, compare, logs, files).

Needs the ``server`` extra (starlette, uvicorn) and numpy. ``ml-dash serve`` mounts the same pages behind its
token; ``ml-dash export-html`` writes a static copy. See docs/viewer.md.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

__all__ = ["create_viewer_app", "view"]


def create_viewer_app(root: str | Path) -> Any:
    from .app import create_viewer_app as _create

    return _create(root)


def view(root: str | Path = ".dash", host: str = "127.0.0.1", port: int = 0, open_browser: bool = True,
         log_level: str = "warning") -> None:
    """Serve the viewer for ``root`` until interrupted; prints one line holding the URL."""
    import uvicorn

    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"no folder {str(path)!r} to view (pass the .dash folder your runs write to)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # connections wait in the backlog until the server accepts them
    real_port = sock.getsockname()[1]
    app = create_viewer_app(path)  # imported and built before the URL is printed: it answers at once
    from .app import bundle

    bundle()  # the scripts read and hashed now, not on the first page
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=2)
    config.load()  # the protocol and event-loop modules imported now, not on the first request
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{real_port}/"
    print(f"ml-dash viewer for {path.resolve()} at {url}", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print("[ML-Dash] warning: the viewer has no authentication; anyone who can reach this address can read "
              "every run (use `ml-dash serve --token` to share runs)", file=sys.stderr, flush=True)
    if open_browser:
        import webbrowser

        try:
            webbrowser.open(url)
        except Exception:  # noqa: BLE001 - no browser is fine
            pass
    uvicorn.Server(config).run(sockets=[sock])
