"""A webhook receiver on 127.0.0.1 for the callback tests: it records every POST (path, headers,
body) and answers 500 to the first `fail_first` of them, 200 after."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.taken: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                record = (self.path, {name.lower(): value for name, value in self.headers.items()}, body)
                with receiver.lock:
                    receiver.received.append(record)
                    failing = len(receiver.received) <= receiver.fail_first
                    if not failing:
                        receiver.taken.append(record)
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@contextlib.contextmanager
def receiving(fail_first: int = 0) -> Iterator[Receiver]:
    receiver = Receiver(fail_first)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(10)
