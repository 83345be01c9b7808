"""A static file server on 127.0.0.1, for the demo's podcast feed (and tests): real HTTP,
never reachable from outside the machine."""
from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        pass


@contextmanager
def serve_directory(root: str, preferred_port: int = 0) -> Iterator[str]:
    """Serve `root` over HTTP on loopback; yields the base URL. A preferred port keeps URLs
    stable from run to run (a free one is taken when it is busy)."""
    handler = functools.partial(_QuietHandler, directory=root)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", preferred_port), handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
