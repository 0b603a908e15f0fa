"""Media from S3 storage (a real SeaweedFS): the page links a presigned URL (302), and the
bucket serves that URL with ranges, so the player can seek without going through us."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from worker.storage import S3Storage

pytestmark = pytest.mark.slow


def test_s3_media_is_a_presigned_redirect_that_serves_ranges(
    seaweedfs: Any, web_env: dict[str, str], tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    from web.app import create_app
    from web.settings import WebSettings

    bucket = "t2v-web-" + tmp_path.name.lower().replace("_", "-")[-30:].strip("-")
    client = seaweedfs.client()
    client.create_bucket(Bucket=bucket)
    storage = S3Storage(bucket, "videos", endpoint_url=seaweedfs.endpoint_url, client=client)
    key = "jobs/ab/abcdef/output-0.mp4"
    data = bytes(range(256)) * 64
    storage.put_stream(key, [data], content_type="video/mp4")

    values = {k.removeprefix("T2V_").lower(): v for k, v in web_env.items()}
    values["storage_url"] = f"s3://{bucket}/videos"
    settings = WebSettings(**values, _env_file=None)  # type: ignore[call-arg]
    app = create_app(settings, storage=storage)
    with TestClient(app, base_url="http://127.0.0.1:8090") as web:
        assert storage.uri_for(key).startswith("s3://")
        answer = web.get(f"/media/{key}", follow_redirects=False)
        assert answer.status_code == 302
        url = answer.headers["location"]
        assert url.startswith(seaweedfs.endpoint_url) and "Signature" in url
        assert web.get("/media/jobs/..%2F..%2Fother", follow_redirects=False).status_code == 404
        app.state.producer.close()
    whole = requests.get(url, timeout=10)
    assert whole.status_code == 200 and whole.content == data
    part = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206 and part.content == data[10:20]
    # Without the signature the bucket refuses it: the redirect is what grants access.
    assert requests.get(url.split("?", 1)[0], timeout=10).status_code == 403
