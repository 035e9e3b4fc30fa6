"""A tiny KServe-v2-style HTTP server on 127.0.0.1 that answers instantly, except once it stalls.

All requests take one lock, as a server-wide pause (GC, a stuck batch) blocks everything; request
number ``stall_at`` holds it for ``stall_s`` seconds. ``service_s`` is each request's time under the
lock (a server of ``1 / service_s`` requests per second); ``delay_s`` each request's time outside it
(latency without a throughput limit).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StallServer:
    def __init__(
        self, stall_at: int = 100, stall_s: float = 1.0, status: int = 200, service_s: float = 0.0, delay_s: float = 0.0
    ) -> None:
        self.stall_at, self.stall_s, self.status = stall_at, stall_s, status
        self.service_s, self.delay_s = service_s, delay_s
        self.count = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes; without this, Nagle + delayed ACK add 40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                rows = body["inputs"][0]["shape"][0]
                with owner.lock:
                    owner.count += 1
                    if owner.count == owner.stall_at:
                        time.sleep(owner.stall_s)
                    if owner.service_s:
                        time.sleep(owner.service_s)
                if owner.delay_s:
                    time.sleep(owner.delay_s)
                if owner.status != 200:
                    payload = json.dumps({"error": "model is overloaded"}).encode()
                else:
                    outputs = [
                        {"name": "LABEL", "datatype": "BYTES", "shape": [rows, 1], "data": ["POSITIVE"] * rows},
                        {"name": "PROBABILITIES", "datatype": "FP32", "shape": [rows, 2], "data": [0.1, 0.9] * rows},
                        {"name": "LOGITS", "datatype": "FP32", "shape": [rows, 2], "data": [-1.0, 1.0] * rows},
                        {"name": "TRUNCATED", "datatype": "BOOL", "shape": [rows, 1], "data": [False] * rows},
                    ]
                    payload = json.dumps({"model_name": "distilbert", "outputs": outputs}).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> StallServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
