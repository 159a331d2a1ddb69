"""The control API the node scheduler uses to drive a connector's store, served from the engine
process on a loopback port (stdlib HTTP on a daemon thread: the connector must not add dependencies
to vLLM's image). JSON everywhere except the K,V bodies (application/octet-stream).

    GET    /v1/info                                store geometry and usage
    GET    /v1/sessions                            every session held, with its tier
    GET    /v1/sessions/{id}                       one session (404 if not held)
    POST   /v1/sessions/{id}/prefetch              disk -> host memory, ahead of the session's turn
    POST   /v1/sessions/{id}/demote                drop the host-memory copy (disk keeps one)
    DELETE /v1/sessions/{id}                       forget the session, free unshared blocks
    GET    /v1/sessions/{id}/layers/{layer}        export one layer (for a peer node);
                                                   ?first=I&count=N: blocks I..I+N-1 only
    PUT    /v1/sessions/{id}/layers/{layer}        import one layer exported by a peer
    GET    /v1/requests/{tag}                      K,V the connector loaded for one request

Session ids are percent-encoded path segments. Errors: 400/404 with {"error": {"message": ...}}.
"""

from __future__ import annotations

import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

from symphony_vllm.store import SessionInfo, TierStore

_SESSION = re.compile(r"^/v1/sessions/([^/]+)(?:/(prefetch|demote|layers/(\d+)))?$")
_REQUEST = re.compile(r"^/v1/requests/([^/]+)$")
MAX_BODY = 1 << 31


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"control_listen must be HOST:PORT, got {listen!r}")
    return host or "127.0.0.1", int(port)


def session_json(s: SessionInfo) -> dict[str, Any]:
    return {
        "session_id": s.session_id,
        "tokens": s.tokens,
        "blocks": s.blocks,
        "host_blocks": s.host_blocks,
        "tier": s.tier,
        "nbytes": s.nbytes,
        "last_used": s.last_used,
    }


class ControlServer:
    def __init__(self, store: TierStore, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store
        handler = _make_handler(store)
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="symphony-kv-control", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()


def _make_handler(store: TierStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: vLLM owns the log
            return

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, doc: object) -> None:
            self._send(status, json.dumps(doc).encode())

        def _error(self, status: int, message: str) -> None:
            self._json(status, {"error": {"message": message, "code": status}})

        def _route(self, method: str) -> None:
            path, _, query = self.path.partition("?")
            params = {k: v[-1] for k, v in parse_qs(query).items()}
            try:
                if method == "GET" and path == "/v1/info":
                    return self._json(HTTPStatus.OK, _info(store))
                if method == "GET" and path == "/v1/sessions":
                    return self._json(
                        HTTPStatus.OK, {"sessions": [session_json(s) for s in store.sessions()]}
                    )
                m = _REQUEST.match(path)
                if m and method == "GET":
                    rec = store.request_record(unquote(m.group(1)))
                    if rec is None:
                        return self._error(HTTPStatus.NOT_FOUND, "no K,V was loaded for that request")
                    return self._json(HTTPStatus.OK, rec)
                m = _SESSION.match(path)
                if not m:
                    return self._error(HTTPStatus.NOT_FOUND, f"no route {method} {path}")
                sid, action, layer = unquote(m.group(1)), m.group(2), m.group(3)
                if method == "PUT" and layer is not None:
                    length = int(self.headers.get("Content-Length") or 0)
                    if not 0 < length <= MAX_BODY:
                        return self._error(HTTPStatus.BAD_REQUEST, "an import needs a non-empty body")
                    payload = self.rfile.read(length)
                    got_sid, _ = store.import_layer(payload, session_id=sid, expected_layer=int(layer))
                    return self._json(HTTPStatus.OK, session_json(store.session_info(got_sid)))
                if method == "GET" and layer is not None:
                    first = int(params.get("first", "0"))
                    count = int(params["count"]) if "count" in params else None
                    body = store.export_layer(sid, int(layer), first, count)
                    return self._send(HTTPStatus.OK, body, "application/octet-stream")
                if method == "GET" and action is None:
                    return self._json(HTTPStatus.OK, session_json(store.session_info(sid)))
                if method == "POST" and action == "prefetch":
                    read = store.prefetch(sid)
                    return self._json(
                        HTTPStatus.OK, {"bytes_read": read, **session_json(store.session_info(sid))}
                    )
                if method == "POST" and action == "demote":
                    return self._json(HTTPStatus.OK, {"bytes_freed": store.demote(sid)})
                if method == "DELETE" and action is None:
                    return self._json(HTTPStatus.OK, {"bytes_freed": store.delete(sid)})
                return self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed on {path}")
            except KeyError:
                return self._error(HTTPStatus.NOT_FOUND, "the store holds no K,V for that session")
            except ValueError as e:
                return self._error(HTTPStatus.BAD_REQUEST, str(e))

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler


def _info(store: TierStore) -> dict[str, Any]:
    st = store.stats()
    return {
        "num_layers": store.num_layers,
        "block_size": store.block_size,
        "kv_bytes_per_token": store.kv_bytes_per_token(),
        "host_capacity_bytes": st.host_capacity_bytes,
        "host_used_bytes": st.host_used_bytes,
        "disk_capacity_bytes": st.disk_capacity_bytes,
        "disk_used_bytes": st.disk_used_bytes,
        "sessions": st.sessions,
        "blocks": st.blocks,
    }
