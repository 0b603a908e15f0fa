"""LocalStorage on disk and S3Storage against a real SeaweedFS (signatures checked)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from t2v_core.errors import ConfigError, PermanentError

# `seaweedfs` comes from tests/conftest.py; the per-test bucket fixture from beside it.
from tests.integration.storage_fixtures import SeaweedS3, s3_bucket  # noqa: F401
from worker.storage import (
    LocalStorage,
    S3Storage,
    Storage,
    object_key,
    poster_key,
    storage_from_url,
)

# -- keys ---------------------------------------------------------------------------------


def test_object_key_is_deterministic() -> None:
    job = "0f3c9a1b2c3d4e5f6a7b8c9d0e1f2a3b"
    assert object_key(job, 0, "mp4") == f"jobs/0f/{job}/output-0.mp4"
    assert object_key(job, 0, ".MP4") == object_key(job, 0, "mp4")
    assert poster_key(job, 2) == f"jobs/0f/{job}/output-2.poster.jpg"


@pytest.mark.parametrize(
    ("job", "index", "ext"),
    [("../x", 0, "mp4"), ("a/b", 0, "mp4"), ("", 0, "mp4"), ("ab", -1, "mp4"), ("ab", 0, "m/4")],
)
def test_object_key_rejects_unsafe_parts(job: str, index: int, ext: str) -> None:
    with pytest.raises(ValueError):
        object_key(job, index, ext)


# -- local ----------------------------------------------------------------------------------


def test_storage_from_url_kinds(tmp_path: Path) -> None:
    assert isinstance(storage_from_url(str(tmp_path / "a")), LocalStorage)
    local = storage_from_url((tmp_path / "b").as_uri())
    assert isinstance(local, LocalStorage) and local.root == (tmp_path / "b").resolve()
    s3 = storage_from_url("s3://bucket/some/prefix/", s3_endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    assert s3.uri_for("k/v.mp4") == "s3://bucket/some/prefix/k/v.mp4"
    with pytest.raises(ConfigError):
        storage_from_url("ftp://x/y")
    with pytest.raises(ConfigError):
        storage_from_url("s3:///nobucket")


def test_local_roundtrip_uris_and_overwrite(tmp_path: Path) -> None:
    storage: Storage = LocalStorage(tmp_path)
    key = object_key("abcdef", 0, "mp4")
    uri = storage.put_stream(key, iter([b"one", b"two"]), content_type="video/mp4")
    assert uri.startswith("file:///") and uri == storage.uri_for(key)
    assert storage.get_bytes(uri) == b"onetwo"
    assert storage.exists(key)
    again = storage.put_file(key, _write(tmp_path / "src.bin", b"three"), content_type="video/mp4")
    assert again == uri
    with storage.open(key) as f:
        assert f.read() == b"three"
    leftovers = [p.name for p in (tmp_path / "jobs/ab/abcdef").iterdir()]
    assert leftovers == ["output-0.mp4"]  # no temp files left behind
    storage.delete(key)
    storage.delete(key)  # idempotent
    assert not storage.exists(key)


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", "a\\b", ""])
def test_local_rejects_escaping_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        LocalStorage(tmp_path / "root").put_stream(key, [b"x"], content_type="x")


def test_local_open_refuses_foreign_uri(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    with pytest.raises(PermanentError):
        storage.open((tmp_path / "elsewhere").as_uri())


def test_local_reader_never_sees_half_a_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key = "jobs/ab/abc/output-0.mp4"
    storage.put_stream(key, [b"A" * 1000], content_type="video/mp4")
    started, release = threading.Event(), threading.Event()

    def slow_chunks() -> Iterator[bytes]:
        yield b"B" * 500
        started.set()
        release.wait(5)
        yield b"B" * 500

    writer = threading.Thread(
        target=storage.put_stream, args=(key, slow_chunks()), kwargs={"content_type": "v"}
    )
    writer.start()
    assert started.wait(5)
    assert storage.get_bytes(key) == b"A" * 1000  # the old complete file, mid-write
    release.set()
    writer.join(5)
    assert storage.get_bytes(key) == b"B" * 1000


def test_local_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key = "jobs/ab/abc/output-0.mp4"
    storage.put_stream(key, [b"old"], content_type="v")

    def broken() -> Iterator[bytes]:
        yield b"new"
        raise RuntimeError("network gone")

    with pytest.raises(RuntimeError):
        storage.put_stream(key, broken(), content_type="v")
    assert storage.get_bytes(key) == b"old"
    assert sorted(p.name for p in (tmp_path / "jobs/ab/abc").iterdir()) == ["output-0.mp4"]


# -- S3 against SeaweedFS --------------------------------------------------------------------


@pytest.fixture
def s3_env(seaweedfs: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> SeaweedS3:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", seaweedfs.region)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return seaweedfs


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_s3_roundtrip_through_storage_from_url(s3_env: SeaweedS3, s3_bucket: str) -> None:  # noqa: F811
    storage = storage_from_url(f"s3://{s3_bucket}/videos", s3_endpoint_url=s3_env.endpoint_url)
    key = object_key("abcdef", 1, "gif")
    uri = storage.put_stream(key, iter([b"GIF89a", b"rest"]), content_type="image/gif")
    assert uri == f"s3://{s3_bucket}/videos/{key}"
    assert storage.exists(key) and storage.exists(uri)
    assert storage.get_bytes(uri) == b"GIF89arest"
    head = s3_env.client().head_object(Bucket=s3_bucket, Key=f"videos/{key}")
    assert head["ContentType"] == "image/gif"
    # Same key again overwrites: still exactly one object.
    storage.put_stream(key, [b"GIF89a-v2"], content_type="image/gif")
    listed = s3_env.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [o["Key"] for o in listed] == [f"videos/{key}"]
    storage.delete(key)
    assert not storage.exists(key)


def test_s3_multipart_file_and_stream(
    s3_env: SeaweedS3,
    s3_bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    storage = S3Storage(
        s3_bucket,
        "mp",
        endpoint_url=s3_env.endpoint_url,
        multipart_threshold=5 * 1024 * 1024,
        multipart_chunksize=5 * 1024 * 1024,  # S3's minimum part size
        max_concurrency=2,
    )
    data = os.urandom(12 * 1024 * 1024 + 123)
    src = _write(tmp_path / "big.mp4", data)
    uri = storage.put_file("big.mp4", src, content_type="video/mp4")
    head = s3_env.client().head_object(Bucket=s3_bucket, Key="mp/big.mp4")
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "video/mp4"
    assert head["ETag"].strip('"').endswith("-3")  # three parts: it really was multipart
    digest = hashlib.sha256()
    with storage.open(uri) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]

    storage.put_stream("streamed.mp4", chunks(), content_type="video/mp4")
    head = s3_env.client().head_object(Bucket=s3_bucket, Key="mp/streamed.mp4")
    assert head["ContentLength"] == len(data) and "-" in head["ETag"]
    assert storage.get_bytes("streamed.mp4") == data


def test_s3_wrong_secret_is_config_error(
    seaweedfs: SeaweedS3,
    s3_bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", seaweedfs.region)
    storage = S3Storage(s3_bucket, endpoint_url=seaweedfs.endpoint_url)
    with pytest.raises(ConfigError, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKey"):
        storage.put_stream("k", [b"x"], content_type="video/mp4")


def test_s3_missing_bucket_and_object(s3_env: SeaweedS3, s3_bucket: str) -> None:  # noqa: F811
    # (SeaweedFS creates a bucket on the first PUT for an admin identity, so read instead.)
    gone = S3Storage("t2v-no-such-bucket-x1", endpoint_url=s3_env.endpoint_url)
    with pytest.raises(ConfigError, match="NoSuchBucket"):
        gone.open("k")
    storage = S3Storage(s3_bucket, endpoint_url=s3_env.endpoint_url)
    with pytest.raises(PermanentError, match="no such object"):
        storage.open("missing.mp4")
    assert not storage.exists("missing.mp4")


def test_s3_open_refuses_foreign_uri(s3_env: SeaweedS3, s3_bucket: str) -> None:  # noqa: F811
    storage = S3Storage(s3_bucket, "p", endpoint_url=s3_env.endpoint_url)
    with pytest.raises(PermanentError):
        storage.open("s3://other-bucket/p/x")
