"""ffprobe/ffmpeg and the PyAV fallback agree on real MP4 and GIF files."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from PIL import Image

from worker.probe import ProbeError, make_inspector, make_poster, probe_video
from worker.storage import LocalStorage

HAVE_FFMPEG = shutil.which("ffprobe") is not None and shutil.which("ffmpeg") is not None
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffprobe/ffmpeg not on PATH")


def _images(n: int, w: int, h: int) -> Iterator[Image.Image]:
    for i in range(n):
        yield Image.new("RGB", (w, h), ((i * 10) % 256, (i * 37) % 256, 200))


def write_mp4(
    path: Path, frames: int = 25, fps: int = 16, size: tuple[int, int] = (128, 96)
) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for image in _images(frames, *size):
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())
    return path


def write_gif(path: Path, frames: int = 12, frame_ms: int = 100) -> Path:
    images = [im.quantize(method=Image.Quantize.FASTOCTREE) for im in _images(frames, 64, 48)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return path


@pytest.fixture
def mp4(tmp_path: Path) -> Path:
    return write_mp4(tmp_path / "clip.mp4")


@pytest.fixture
def gif(tmp_path: Path) -> Path:
    return write_gif(tmp_path / "clip.gif")


@needs_ffmpeg
@pytest.mark.parametrize("kind", ["mp4", "gif"])
def test_ffprobe_and_pyav_agree(kind: str, mp4: Path, gif: Path) -> None:
    path = mp4 if kind == "mp4" else gif
    a = probe_video(path, use_ffprobe=True)
    b = probe_video(path, use_ffprobe=False)
    assert (a.frames, a.fps, a.width, a.height) == (b.frames, b.fps, b.width, b.height)
    assert a.duration == pytest.approx(b.duration, abs=0.01)
    assert a.codec == b.codec


@pytest.mark.parametrize("use_ffprobe", [pytest.param(True, marks=needs_ffmpeg), False])
def test_mp4_numbers(mp4: Path, use_ffprobe: bool) -> None:
    info = probe_video(mp4, use_ffprobe=use_ffprobe)
    assert (info.frames, info.fps, info.width, info.height) == (25, 16.0, 128, 96)
    assert info.duration == pytest.approx(25 / 16, abs=0.01)
    assert info.codec == "h264"
    assert info.format and "mp4" in info.format
    assert info.record_fields() == {
        "duration": info.duration,
        "frames": 25,
        "width": 128,
        "height": 96,
        "fps": 16.0,
    }


@pytest.mark.parametrize("use_ffprobe", [pytest.param(True, marks=needs_ffmpeg), False])
def test_gif_numbers(gif: Path, use_ffprobe: bool) -> None:
    info = probe_video(gif, use_ffprobe=use_ffprobe)
    assert (info.frames, info.fps, info.width, info.height) == (12, 10.0, 64, 48)
    assert info.duration == pytest.approx(1.2, abs=0.01)
    assert info.codec == "gif"


@pytest.mark.parametrize("use", [pytest.param(True, marks=needs_ffmpeg), False])
@pytest.mark.parametrize("kind", ["mp4", "gif"])
def test_poster_is_a_jpeg(kind: str, use: bool, mp4: Path, gif: Path, tmp_path: Path) -> None:
    src = mp4 if kind == "mp4" else gif
    out = make_poster(src, tmp_path / f"poster-{kind}-{use}.jpg", use_ffmpeg=use)
    data = out.read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9"
    with Image.open(out) as image:
        assert image.format == "JPEG"
        assert image.size[0] >= 60


@pytest.mark.parametrize("use_ffprobe", [pytest.param(True, marks=needs_ffmpeg), False])
def test_garbage_raises_probe_error(tmp_path: Path, use_ffprobe: bool) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100)
    with pytest.raises(ProbeError):
        probe_video(bad, use_ffprobe=use_ffprobe)


def test_inspector_probes_and_stores_poster(mp4: Path, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    inspect = make_inspector(storage=storage, poster_key="jobs/ab/abc/output-0.poster.jpg")
    meta = inspect(mp4)
    assert meta["frames"] == 25
    assert meta["poster_uri"] == storage.uri_for("jobs/ab/abc/output-0.poster.jpg")
    assert storage.get_bytes(meta["poster_uri"])[:2] == b"\xff\xd8"


def test_without_ffmpeg_on_path_falls_back_to_pyav(
    mp4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert shutil.which("ffprobe") is None
    info = probe_video(mp4)
    assert (info.frames, info.fps) == (25, 16.0)
    assert make_poster(mp4, tmp_path / "p.jpg").read_bytes()[:2] == b"\xff\xd8"
