"""The connector's control API over real loopback HTTP (what the node scheduler calls)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from symphony_vllm.control import ControlServer, parse_listen
from symphony_vllm.store import TierStore


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlServer]:
    store = TierStore(tmp_path, num_layers=2, block_size=4)
    for key in ("a", "b"):
        for layer in range(2):
            store.put_layer(key, layer, b"kv" * 8)
    store.record_session("chat/1", ["a", "b"])
    srv = ControlServer(store)
    srv.start()
    yield srv
    srv.stop()


def call(srv: ControlServer, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_lists_sessions_with_their_tier(server: ControlServer) -> None:
    status, body = call(server, "GET", "/v1/sessions")
    assert status == 200
    (s,) = json.loads(body)["sessions"]
    assert (s["session_id"], s["tokens"], s["tier"]) == ("chat/1", 8, "host")


def test_session_ids_are_percent_encoded(server: ControlServer) -> None:
    status, body = call(server, "POST", "/v1/sessions/chat%2F1/demote")
    assert status == 200 and json.loads(body)["bytes_freed"] == 64
    status, body = call(server, "GET", "/v1/sessions/chat%2F1")
    assert json.loads(body)["tier"] == "disk"


def test_unknown_sessions_get_a_json_404(server: ControlServer) -> None:
    status, body = call(server, "POST", "/v1/sessions/nope/prefetch")
    assert status == 404
    assert "no K,V" in json.loads(body)["error"]["message"]


def test_export_then_import_into_another_node(server: ControlServer, tmp_path: Path) -> None:
    other = ControlServer(TierStore(tmp_path / "peer", num_layers=2, block_size=4))
    other.start()
    try:
        for layer in range(2):
            status, payload = call(server, "GET", f"/v1/sessions/chat%2F1/layers/{layer}")
            assert status == 200
            status, body = call(other, "PUT", f"/v1/sessions/chat%2F1/layers/{layer}", payload)
            assert status == 200
        assert json.loads(body)["tokens"] == 8
        status, _ = call(other, "DELETE", "/v1/sessions/chat%2F1")
        assert status == 200
        assert json.loads(call(other, "GET", "/v1/info")[1])["blocks"] == 0
    finally:
        other.stop()


def test_an_import_of_garbage_is_a_400_and_stores_nothing(server: ControlServer) -> None:
    status, body = call(server, "PUT", "/v1/sessions/x/layers/0", b"not a K,V export")
    assert status == 400
    assert "magic" in json.loads(body)["error"]["message"]
    assert call(server, "GET", "/v1/sessions/x")[0] == 404


def test_a_layer_mismatch_between_path_and_body_is_refused(server: ControlServer) -> None:
    _, payload = call(server, "GET", "/v1/sessions/chat%2F1/layers/0")
    status, body = call(server, "PUT", "/v1/sessions/y/layers/1", payload)
    assert status == 400 and "layer 0" in json.loads(body)["error"]["message"]
    assert call(server, "GET", "/v1/sessions/y")[0] == 404


def test_listen_addresses_are_checked() -> None:
    assert parse_listen("127.0.0.1:8201") == ("127.0.0.1", 8201)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("8201x")
