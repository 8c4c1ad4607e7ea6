"""An S3 quota in front of a real S3 server, for the "full quota" fault: SeaweedFS keeps no
per-bucket byte quota that answers as AWS, Ceph RGW or MinIO do, so this HTTP proxy passes
every request through to it unchanged (signatures included: the Host header is kept) until
the bytes PUT reach a budget; past it, a PUT is answered as Ceph RGW answers one over its
quota (HTTP 403, code QuotaExceeded) or as MinIO answers a full drive (HTTP 507,
XMinioStorageFull), and the object is not stored. With `max_object`, a PUT of a larger body is
answered as a store with a maximum object size answers it (HTTP 400, EntityTooLarge, as AWS,
MinIO and Ceph RGW do). Every request's method, Host header, path and body length are kept in `seen`."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWERS = {"QuotaExceeded": 403, "XMinioStorageFull": 507, "EntityTooLarge": 400}


class QuotaProxy:
    def __init__(self, target_port: int, budget: int | None = None, code: str = "QuotaExceeded",
                 max_object: int | None = None):
        self.target_port = target_port
        self.budget = budget
        self.code = code
        self.max_object = max_object
        self.seen: list[tuple[str, str, str, int]] = []        # (method, Host header, path, body length)
        self.put_bytes = 0
        self.refused = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.seen.append((self.command, self.headers.get("Host", ""), self.path, length))
                if self.command == "PUT" and length:
                    with proxy._lock:
                        code = None
                        if proxy.max_object is not None and length > proxy.max_object:
                            code = "EntityTooLarge"
                        elif proxy.budget is not None and proxy.put_bytes + length > proxy.budget:
                            code = proxy.code
                        if code:
                            proxy.refused += 1
                        else:
                            proxy.put_bytes += length
                    if code:
                        doc = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                               f"<Message>refused</Message><Resource>{self.path}</Resource>"
                               "<RequestId>quota</RequestId></Error>").encode()
                        self.send_response(ANSWERS[code])
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(doc)))
                        self.end_headers()
                        self.wfile.write(doc)
                        return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=120)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for key, value in self.headers.items():
                        conn.putheader(key, value)
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for key, value in resp.getheaders():
                        if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(key, value)
                    # a HEAD's length is the object's, not the (empty) body's
                    size = resp.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", size or str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "QuotaProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
