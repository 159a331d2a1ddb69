"""Mutual TLS on the live stack: every process presents a certificate of the cluster's CA, turns
flow end to end, and a client with no certificate, or one from another CA, is refused."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from symphony.security import Channels, SecurityConfigError, TlsConfig
from symphony_cluster.local import LocalStack, StackConfig

from .certs import Identity, make_identity
from .stackutil import log_tail, turn_rows

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def _health(channel: grpc.aio.Channel) -> int:
    resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    return int(resp.status)


async def _refused(channel: grpc.aio.Channel) -> None:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _health(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def _creds(identity: Identity, cert: bool = True) -> TlsConfig:
    config = TlsConfig.from_files(
        identity.cert if cert else None, identity.key if cert else None, identity.ca
    )
    assert config is not None
    return config


async def test_the_stack_runs_on_mutual_tls_and_refuses_strangers(tmp_path: Path) -> None:
    cluster = make_identity(tmp_path / "pki", "cluster")
    rogue = make_identity(tmp_path / "pki", "rogue")
    out = tmp_path / "run"
    stack = LocalStack(
        StackConfig(
            nodes=2,
            clients=6,
            duration_s=60,
            profile="cpu-tiny/test",
            out_dir=out,
            quiet=True,
            tls_cert=cluster.cert,
            tls_key=cluster.key,
            tls_ca=cluster.ca,
            workload_args=["--time-scale", "20", "--max-turns", "18", "--no-plots", "--quiet"],
        )
    )
    try:
        await stack.start()  # nodes registered over mTLS
        code = await stack.run_workload()
        for port in [stack.endpoints.scheduler_grpc, *stack.endpoints.node_grpc]:
            address = f"127.0.0.1:{port}"
            async with Channels(_creds(cluster)).open(address) as good:
                assert await _health(good) == health_pb2.HealthCheckResponse.SERVING
            await _refused(grpc.aio.insecure_channel(address))  # plaintext
            await _refused(Channels(_creds(cluster, cert=False)).open(address))  # TLS, no client cert
            await _refused(Channels(_creds(rogue)).open(address))  # a certificate of another CA
            # Trusting the wrong CA, the client refuses the server too.
            wrong_ca = TlsConfig.from_files(cluster.cert, cluster.key, rogue.ca)
            await _refused(Channels(wrong_ca).open(address))
    finally:
        await stack.stop()
    assert code == 0, log_tail(out, "workloadgen")
    rows = turn_rows(out)
    assert len(rows) >= 18 and all(r["ok"] for r in rows)
    assert {r["node_id"] for r in rows} <= {"node-0", "node-1"}
    for name in ("scheduler", "node-0", "node-1"):
        assert "PRIVATE KEY" not in log_tail(out, name, 100_000)
    assert "PRIVATE KEY" not in json.dumps(json.loads((out / "summary.json").read_text()))


def test_tls_settings_are_checked_with_a_message_naming_the_flag(tmp_path: Path) -> None:
    ident = make_identity(tmp_path, "x")
    with pytest.raises(SecurityConfigError, match="--tls-cert and --tls-key go together"):
        TlsConfig.from_files(cert=ident.cert, ca=ident.ca)
    with pytest.raises(SecurityConfigError, match=r"--tls-ca .*missing\.pem: cannot read"):
        TlsConfig.from_files(ca=tmp_path / "missing.pem")
    with pytest.raises(SecurityConfigError, match=r"--tls-key .*not a PEM private key"):
        TlsConfig.from_files(cert=ident.cert, key=ident.cert)
    config = TlsConfig.from_files(ident.cert, ident.key, ident.ca)
    assert "PRIVATE" not in repr(config) and "cert=set" in repr(config)
