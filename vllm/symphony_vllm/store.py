"""The node's K,V tier store: an in-process host-memory cache in front of a disk directory.

Layout of the directory (the disk tier; it is also how the engine's scheduler side, which may run in
another process than the workers, learns what is held)::

    ROOT/blocks/<k[:2]>/<key>/L<layer>.bin   one layer of one full block (raw K,V bytes)
    ROOT/blocks/<k[:2]>/<key>/complete       written once every layer is on disk
    ROOT/sessions/<sha1(session)>.json       {"session_id", "keys", "block_size", "num_layers", "nbytes"}

Writes go to host memory and through to disk, so demoting a block from host memory never costs a
write (the design's write-behind copy on the slowest tier). Host memory is an LRU bounded in bytes;
the disk is bounded in bytes too, and evicts whole least-recently-used sessions. Blocks are shared
between sessions with a common prefix and deleted only when no session references them.

Thread safety: one lock; the engine's forward path and the control server call in from different
threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_EXPORT_MAGIC = b"SYKV1\n"


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    tokens: int
    blocks: int
    host_blocks: int  # blocks with every layer in host memory
    nbytes: int
    last_used: float

    @property
    def tier(self) -> str:
        return "host" if self.blocks and self.host_blocks == self.blocks else "disk"


@dataclass(frozen=True)
class StoreStats:
    host_capacity_bytes: int
    host_used_bytes: int
    disk_capacity_bytes: int
    disk_used_bytes: int
    sessions: int
    blocks: int


class TierStore:
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        num_layers: int,
        block_size: int,
        host_capacity_bytes: int = 1 << 30,
        disk_capacity_bytes: int = 16 << 30,
        kv_bytes_per_token: int = 0,
    ) -> None:
        if num_layers <= 0 or block_size <= 0:
            raise ValueError("num_layers and block_size must be positive")
        self.root = Path(root)
        self.num_layers = num_layers
        self.block_size = block_size
        self.host_capacity_bytes = host_capacity_bytes
        self.disk_capacity_bytes = disk_capacity_bytes
        self._kv_bytes_per_token = kv_bytes_per_token
        self._lock = threading.RLock()
        self._host: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._requests: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._host_bytes = 0
        (self.root / "blocks").mkdir(parents=True, exist_ok=True)
        (self.root / "sessions").mkdir(parents=True, exist_ok=True)
        self._disk_bytes = sum(p.stat().st_size for p in (self.root / "blocks").rglob("L*.bin"))

    # ---- blocks -------------------------------------------------------------------------------
    def _block_dir(self, key: str) -> Path:
        return self.root / "blocks" / key[:2] / key

    def has_block(self, key: str) -> bool:
        """True when every layer of the block can be loaded (it is complete on disk)."""
        return (self._block_dir(key) / "complete").exists()

    def held_prefix(self, keys: Sequence[str]) -> int:
        """Number of leading blocks of ``keys`` the store can serve."""
        n = 0
        for key in keys:
            if not self.has_block(key):
                break
            n += 1
        return n

    def put_layer(self, key: str, layer: int, data: bytes) -> None:
        """Stores one layer of one block in host memory and on disk; marks the block complete when its
        last layer arrives."""
        self._check_layer(layer)
        with self._lock:
            self._host_put((key, layer), data)
            d = self._block_dir(key)
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"L{layer}.bin"
            old = path.stat().st_size if path.exists() else 0
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            self._disk_bytes += len(data) - old
            if all((d / f"L{i}.bin").exists() for i in range(self.num_layers)):
                (d / "complete").touch()

    def get_layer(self, key: str, layer: int) -> bytes:
        """One layer of one block, from host memory when cached, else from disk (then cached)."""
        self._check_layer(layer)
        with self._lock:
            data = self._host.get((key, layer))
            if data is not None:
                self._host.move_to_end((key, layer))
                return data
            path = self._block_dir(key) / f"L{layer}.bin"
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise KeyError(f"block {key} layer {layer} is not stored") from None
            self._host_put((key, layer), data)
            return data

    def kv_bytes_per_token(self) -> int:
        """K,V bytes of one token over all layers: as configured, else learnt from a stored block."""
        if self._kv_bytes_per_token:
            return self._kv_bytes_per_token
        with self._lock:
            for (_, _), data in self._host.items():
                return len(data) * self.num_layers // self.block_size
        for p in (self.root / "blocks").glob("*/*/L0.bin"):
            return p.stat().st_size * self.num_layers // self.block_size
        return 0

    def in_host(self, key: str) -> bool:
        with self._lock:
            return all((key, i) in self._host for i in range(self.num_layers))

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} out of range 0..{self.num_layers - 1}")

    def _host_put(self, hk: tuple[str, int], data: bytes) -> None:
        old = self._host.pop(hk, None)
        if old is not None:
            self._host_bytes -= len(old)
        if len(data) > self.host_capacity_bytes:
            return
        self._host[hk] = data
        self._host_bytes += len(data)
        while self._host_bytes > self.host_capacity_bytes:
            _, dropped = self._host.popitem(last=False)
            self._host_bytes -= len(dropped)

    def _host_drop(self, key: str) -> int:
        freed = 0
        for i in range(self.num_layers):
            data = self._host.pop((key, i), None)
            if data is not None:
                freed += len(data)
        self._host_bytes -= freed
        return freed

    # ---- per-request load records (what the node scheduler reports as cached-by-tier) ----------
    def note_request(self, tag: str, **values: float) -> None:
        with self._lock:
            rec = self._requests.setdefault(tag, {"host_tokens": 0.0, "disk_tokens": 0.0, "load_s": 0.0})
            rec.update(values)
            self._requests.move_to_end(tag)
            while len(self._requests) > 4096:
                self._requests.popitem(last=False)

    def request_record(self, tag: str) -> dict[str, float] | None:
        with self._lock:
            rec = self._requests.get(tag)
            return dict(rec) if rec is not None else None

    # ---- sessions -----------------------------------------------------------------------------
    def _session_path(self, session_id: str) -> Path:
        return self.root / "sessions" / (hashlib.sha1(session_id.encode()).hexdigest() + ".json")

    def _read_session(self, session_id: str) -> dict[str, object] | None:
        try:
            raw = json.loads(self._session_path(session_id).read_text())
        except FileNotFoundError:
            return None
        return raw if isinstance(raw, dict) else None

    def _all_sessions(self) -> list[dict[str, object]]:
        out = []
        for p in (self.root / "sessions").glob("*.json"):
            try:
                raw = json.loads(p.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if isinstance(raw, dict):
                out.append(raw)
        return out

    def record_session(self, session_id: str, keys: Sequence[str]) -> None:
        """Remembers that ``session_id``'s prompt is the chain ``keys`` (only held blocks count); a
        shorter chain (an earlier turn arriving late) never replaces a longer one."""
        with self._lock:
            held = list(keys[: self.held_prefix(keys)])
            old = self._read_session(session_id)
            old_keys = list(old.get("keys", [])) if old else []  # type: ignore[call-overload]
            if len(old_keys) > len(held) and old_keys[: len(held)] == held:
                held = old_keys
            nbytes = sum(self._block_bytes(k) for k in held)
            doc = {
                "session_id": session_id,
                "keys": held,
                "block_size": self.block_size,
                "num_layers": self.num_layers,
                "nbytes": nbytes,
                "last_used": time.time(),
            }
            path = self._session_path(session_id)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc))
            tmp.replace(path)
            self._evict_disk(keep=session_id)

    def _block_bytes(self, key: str) -> int:
        d = self._block_dir(key)
        return sum(p.stat().st_size for p in d.glob("L*.bin")) if d.exists() else 0

    def session_keys(self, session_id: str) -> list[str]:
        doc = self._read_session(session_id)
        if doc is None:
            raise KeyError(session_id)
        keys = doc.get("keys", [])
        return [str(k) for k in keys] if isinstance(keys, list) else []

    def session_info(self, session_id: str) -> SessionInfo:
        doc = self._read_session(session_id)
        if doc is None:
            raise KeyError(session_id)
        return self._info(doc)

    def _info(self, doc: dict[str, object]) -> SessionInfo:
        keys = [str(k) for k in doc.get("keys", [])]  # type: ignore[attr-defined]
        with self._lock:
            host = sum(1 for k in keys if self.in_host(k))
        return SessionInfo(
            session_id=str(doc["session_id"]),
            tokens=len(keys) * self.block_size,
            blocks=len(keys),
            host_blocks=host,
            nbytes=int(doc.get("nbytes", 0)),  # type: ignore[call-overload]
            last_used=float(doc.get("last_used", 0.0)),  # type: ignore[arg-type]
        )

    def sessions(self) -> list[SessionInfo]:
        return sorted((self._info(d) for d in self._all_sessions()), key=lambda s: s.session_id)

    def prefetch(self, session_id: str) -> int:
        """Reads a session's blocks into host memory ahead of its turn; returns bytes read from disk."""
        read = 0
        with self._lock:
            for key in self.session_keys(session_id):
                for layer in range(self.num_layers):
                    if (key, layer) not in self._host:
                        read += len(self.get_layer(key, layer))
        return read

    def demote(self, session_id: str) -> int:
        """Drops a session's blocks from host memory (the disk copy stays); returns bytes freed."""
        with self._lock:
            return sum(self._host_drop(k) for k in self.session_keys(session_id))

    def delete(self, session_id: str) -> int:
        """Forgets a session and deletes the blocks no other session uses; returns bytes freed."""
        with self._lock:
            keys = self.session_keys(session_id)
            self._session_path(session_id).unlink()
            return self._delete_unreferenced(keys)

    def _delete_unreferenced(self, keys: Iterable[str]) -> int:
        used = {str(k) for d in self._all_sessions() for k in d.get("keys", [])}  # type: ignore[attr-defined]
        freed = 0
        for key in keys:
            if key in used:
                continue
            self._host_drop(key)
            d = self._block_dir(key)
            if not d.exists():
                continue
            for p in d.iterdir():
                if p.name.startswith("L"):
                    size = p.stat().st_size
                    self._disk_bytes -= size
                    freed += size
                p.unlink()
            d.rmdir()
        return freed

    def _evict_disk(self, keep: str) -> None:
        if self._disk_bytes <= self.disk_capacity_bytes:
            return
        docs = sorted(self._all_sessions(), key=lambda d: float(d.get("last_used", 0.0)))  # type: ignore[arg-type]
        for doc in docs:
            if self._disk_bytes <= self.disk_capacity_bytes:
                break
            sid = str(doc["session_id"])
            if sid != keep:
                self.delete(sid)

    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(
                host_capacity_bytes=self.host_capacity_bytes,
                host_used_bytes=self._host_bytes,
                disk_capacity_bytes=self.disk_capacity_bytes,
                disk_used_bytes=self._disk_bytes,
                sessions=len(self._all_sessions()),
                blocks=sum(1 for _ in (self.root / "blocks").glob("*/*/complete")),
            )

    # ---- peer migration -----------------------------------------------------------------------
    def export_layer(self, session_id: str, layer: int, first: int = 0, count: int | None = None) -> bytes:
        """One layer of ``count`` blocks of a session from block ``first`` (default: all), as a
        self-describing frame for a peer's :meth:`import_layer`. Chunking keeps a frame under the
        transport's message limit (one layer of a 32K-token Llama-8B session is 128 MiB).

        Frame: magic, u32 header length, JSON header {session_id, layer, keys (the whole chain),
        first, block_size, num_layers, sizes (of the blocks in this frame)}, then those blocks' bytes."""
        keys = self.session_keys(session_id)
        if first < 0 or (count is not None and count <= 0):
            raise ValueError("first must be >= 0 and count > 0")
        self._check_layer(layer)
        chunk = keys[first : None if count is None else first + count]
        parts = [self.get_layer(k, layer) for k in chunk]
        header = json.dumps(
            {
                "session_id": session_id,
                "layer": layer,
                "keys": keys,
                "first": first,
                "block_size": self.block_size,
                "num_layers": self.num_layers,
                "sizes": [len(p) for p in parts],
            }
        ).encode()
        return b"".join([_EXPORT_MAGIC, struct.pack("<I", len(header)), header, *parts])

    def import_layer(
        self, payload: bytes, session_id: str | None = None, expected_layer: int | None = None
    ) -> tuple[str, int]:
        """Stores a peer's exported layer; once all layers of a block are in, it is loadable, and the
        session is recorded with the blocks complete so far. Returns (session_id, layer)."""
        if not payload.startswith(_EXPORT_MAGIC) or len(payload) < len(_EXPORT_MAGIC) + 4:
            raise ValueError("not a Symphony K,V export (bad magic)")
        off = len(_EXPORT_MAGIC)
        (hlen,) = struct.unpack_from("<I", payload, off)
        off += 4
        try:
            header = json.loads(payload[off : off + hlen])
        except json.JSONDecodeError as e:
            raise ValueError(f"corrupt export header: {e}") from None
        off += hlen
        if header.get("block_size") != self.block_size or header.get("num_layers") != self.num_layers:
            raise ValueError(
                f"export has block_size={header.get('block_size')} num_layers={header.get('num_layers')},"
                f" this store has block_size={self.block_size} num_layers={self.num_layers}"
            )
        sizes = header["sizes"]
        keys = [str(k) for k in header["keys"]]
        first = int(header.get("first", 0))
        chunk = keys[first : first + len(sizes)]
        if len(chunk) != len(sizes) or off + sum(sizes) != len(payload):
            raise ValueError("export body does not match its header")
        layer = int(header["layer"])
        self._check_layer(layer)
        if expected_layer is not None and layer != expected_layer:
            raise ValueError(f"body holds layer {layer}, expected layer {expected_layer}")
        with self._lock:
            for key, size in zip(chunk, sizes, strict=True):
                self.put_layer(key, layer, payload[off : off + size])
                off += size
            sid = session_id or str(header["session_id"])
            self.record_session(sid, keys)
        return sid, layer
