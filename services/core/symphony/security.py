"""TLS / mutual TLS for every gRPC server and channel, API keys for the HTTP front door, and the
gRPC front door's refusal of undecodable messages.

One identity per process: ``--tls-cert``/``--tls-key`` (PEM) are what its servers present and what
its channels present as a client certificate; ``--tls-ca`` is the authority it trusts. A server
given a CA requires client certificates signed by it (mutual TLS); a client given only a CA checks
the server and presents nothing. ``--tls-server-name`` names the certificate's host when peers are
dialled by address (pod IPs). Files are read once, at start-up; a missing or unreadable file is a
``SecurityConfigError`` naming the flag and the path, and no key material ever reaches a log.
"""

from __future__ import annotations

import argparse
import hmac
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

Options = Sequence[tuple[str, Any]]


class SecurityConfigError(ValueError):
    """A TLS or API-key setting that cannot be used (names the flag and the file)."""


def _read(path: str | Path, flag: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise SecurityConfigError(f"{flag} {path}: cannot read ({err.strerror})") from None
    if not data.strip():
        raise SecurityConfigError(f"{flag} {path}: the file is empty")
    return data


@dataclass(frozen=True, repr=False)
class TlsConfig:
    """PEM material of one process. ``repr`` shows only whether each part is set."""

    cert: bytes | None = None
    key: bytes | None = None
    ca: bytes | None = None
    server_name: str = ""

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={'set' if getattr(self, n) else 'unset'}" for n in ("cert", "key", "ca"))
        return f"TlsConfig({parts}, server_name={self.server_name!r})"

    @classmethod
    def from_files(
        cls,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        ca: str | Path | None = None,
        server_name: str = "",
    ) -> TlsConfig | None:
        """None when no TLS flag is given (plaintext); else the loaded files, checked for pairs."""
        if not (cert or key or ca):
            if server_name:
                raise SecurityConfigError("--tls-server-name needs --tls-ca")
            return None
        if bool(cert) != bool(key):
            raise SecurityConfigError("--tls-cert and --tls-key go together")
        config = cls(
            cert=_read(cert, "--tls-cert") if cert else None,
            key=_read(key, "--tls-key") if key else None,
            ca=_read(ca, "--tls-ca") if ca else None,
            server_name=server_name,
        )
        if config.cert is not None and b"CERTIFICATE" not in config.cert:
            raise SecurityConfigError(f"--tls-cert {cert}: not a PEM certificate")
        if config.key is not None and b"PRIVATE KEY" not in config.key:
            raise SecurityConfigError(f"--tls-key {key}: not a PEM private key")
        if config.ca is not None and b"CERTIFICATE" not in config.ca:
            raise SecurityConfigError(f"--tls-ca {ca}: not a PEM certificate")
        return config

    @property
    def mutual(self) -> bool:
        return self.ca is not None and self.cert is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        if self.cert is None or self.key is None:
            raise SecurityConfigError("a TLS server needs --tls-cert and --tls-key")
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=self.ca is not None
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


class Channels:
    """Opens gRPC channels the way this process is configured: plaintext, TLS or mutual TLS.

    Components receive one of these instead of calling ``grpc.aio.insecure_channel`` themselves.
    """

    def __init__(self, tls: TlsConfig | None = None) -> None:
        self.tls = tls

    def open(self, address: str, options: Options = ()) -> grpc.aio.Channel:
        if self.tls is None:
            return grpc.aio.insecure_channel(address, options=list(options))
        opts = list(options)
        if self.tls.server_name:
            opts.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return grpc.aio.secure_channel(address, self.tls.channel_credentials(), options=opts)

    def server_credentials(self) -> grpc.ServerCredentials | None:
        return self.tls.server_credentials() if self.tls is not None else None


# -- API keys ------------------------------------------------------------------------------------


def load_api_keys(path: str | Path | None = None, env_var: str = "SYMPHONY_API_KEYS") -> frozenset[str]:
    """API keys from a file (one per line, ``#`` comments) and/or an environment variable (comma
    separated). An empty set means the front door is open."""
    keys: set[str] = set()
    if path:
        for line in _read(path, "--api-key-file").decode("utf-8", "replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.add(line)
    keys.update(k.strip() for k in os.environ.get(env_var, "").split(",") if k.strip())
    if any(len(k) < 16 for k in keys):
        raise SecurityConfigError("API keys must be at least 16 characters long")
    return frozenset(keys)


class ApiKeys:
    """Checks a presented key in constant time against every configured key."""

    def __init__(self, keys: frozenset[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def valid(self, presented: str | None) -> bool:
        if not self._keys:
            return True
        if not presented:
            return False
        given = presented.encode()
        return any(hmac.compare_digest(given, k) for k in self._keys)


def bearer_token(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key of an ``Authorization: Bearer KEY`` or ``x-api-key: KEY`` header."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return x_api_key.strip() if x_api_key else None


# -- malformed messages ----------------------------------------------------------------------------


class _Malformed:
    def __init__(self, message: str) -> None:
        self.message = message


class RejectMalformed(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # generic in stubs only
    """Bytes that do not decode as the method's request message end with INVALID_ARGUMENT naming the
    method and the decoder's complaint (grpc would answer UNKNOWN and log a traceback)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        decode = handler.request_deserializer

        def safe_decode(data: bytes) -> object:
            try:
                return decode(data)
            except Exception as err:
                return _Malformed(f"{method}: the request is not a valid message ({err})")

        if handler.unary_unary is not None:
            return handler._replace(  # type: ignore[attr-defined,no-any-return]
                request_deserializer=safe_decode, unary_unary=_guard(handler.unary_unary)
            )
        if handler.unary_stream is not None:
            return handler._replace(  # type: ignore[attr-defined,no-any-return]
                request_deserializer=safe_decode, unary_stream=_guard(handler.unary_stream)
            )
        return handler


def _guard(behaviour: Any) -> Any:
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            async for item in behaviour(request, context):
                yield item

        return stream

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await behaviour(request, context)

    return unary


# -- command lines -------------------------------------------------------------------------------


def add_tls_flags(parser: argparse.ArgumentParser) -> None:
    """The same four TLS flags on every command (see the module docstring)."""
    g = parser.add_argument_group("TLS (every gRPC server and channel of this process)")
    g.add_argument("--tls-cert", default=None, help="PEM certificate presented as server and as client")
    g.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    g.add_argument(
        "--tls-ca", default=None, help="PEM CA bundle trusted; servers then require client certs (mTLS)"
    )
    g.add_argument("--tls-server-name", default="", help="host name expected in peers' certificates")


def tls_from_args(args: argparse.Namespace) -> TlsConfig | None:
    """Raises :class:`SecurityConfigError` (a ValueError) naming the flag at fault."""
    return TlsConfig.from_files(args.tls_cert, args.tls_key, args.tls_ca, args.tls_server_name)
