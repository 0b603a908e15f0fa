"""The docs' own sample client, loaded from the seed page at test time, runs unchanged.

Only the base URL is replaced, and ``time.sleep`` is shortened; the sample's code is never
copied into the project.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests.simulator.simhelpers import SEED_DIR, Sim, ffprobe, need

SEED_PAGE = SEED_DIR / "text-to-video.md"
REAL_BASE = "https://modelslab.com/api/v6"


def sample_code() -> str:
    need(SEED_PAGE.is_file(), f"seed page missing: {SEED_PAGE}")
    blocks = re.findall(r"```python[^\n]*\n(.*?)```", SEED_PAGE.read_text(), re.S)
    assert len(blocks) == 1, "the seed page should hold exactly one python sample"
    assert REAL_BASE in blocks[0]
    return blocks[0]


def test_docs_sample_client_runs_unchanged(
    sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = sample_code().replace(REAL_BASE, sim.api)
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda _s: real_sleep(0.05))
    exec(compile(code, str(SEED_PAGE), "exec"), {"__name__": "seed_sample"})  # noqa: S102

    printed = capsys.readouterr().out
    match = re.search(r"Video ready: (\S+)", printed)
    assert match, printed
    url = match.group(1)
    assert url.startswith(f"{sim.url}/files/")
    target = tmp_path / ("video." + url.rsplit(".", 1)[1])
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        target.write_bytes(response.read())
    info = ffprobe(target)
    assert int(info["nb_read_frames"]) == 25  # the sample asks for 25 frames
    assert (info["width"], info["height"]) == (512, 512)
    stats = sim.stats()
    assert stats["submits"]["by_key"] == {"your_api_key": 1}
    assert stats["downloads"]["total"] == 1
