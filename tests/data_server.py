"""A loopback-only HTTP file server for download tests, with scripted failures.

``serve({"/name": (body, behaviour)})`` runs a threaded ``http.server`` on 127.0.0.1 with an
ephemeral port and yields ``(base_url, log)``; ``log`` lists the paths requested. Behaviours:

- ``"ok"``: 200 with the whole body;
- ``"truncate"``: 200 announcing ``Content-Length: len(body)`` but sending half, then closing;
- ``"stall"``: 200, sends half, then waits (at most ``STALL_S`` seconds) before closing;

and any path not listed gets a 404. Nothing listens beyond the loopback interface.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STALL_S = 5.0


@contextlib.contextmanager
def serve(routes: dict[str, tuple[bytes, str]]) -> Iterator[tuple[str, list[str]]]:
    log: list[str] = []
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            log.append(self.path)
            if self.path not in routes:
                self.send_error(404, "not found")
                return
            body, behaviour = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if behaviour == "ok":
                self.wfile.write(body)
                return
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if behaviour == "stall":
                release.wait(STALL_S)
            elif behaviour != "truncate":
                raise ValueError(f"unknown behaviour {behaviour!r}")
            self.close_connection = True

        def log_message(self, format, *args):  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}/", log
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=STALL_S)
