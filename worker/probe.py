"""What a downloaded video is (duration, frames, size, fps) and a poster frame for it.

``probe_video`` runs ``ffprobe -count_frames`` when it is on PATH and falls back to PyAV
(bundled with the ``av`` wheel) on machines without ffmpeg; both give the same numbers for
the MP4s and GIFs the provider sends. ``make_poster`` writes a JPEG of the middle frame
with ffmpeg or PyAV. ``make_inspector`` bundles both as the ``inspect`` hook of
``download_to_storage``: it runs on the temp file before it is deleted and uploads the
poster beside the video.

Never: trust the file (it came from the internet): every subprocess gets a timeout and
an argument list (no shell), and failures raise ``ProbeError`` instead of hanging.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from t2v_core.errors import T2VError

__all__ = ["ProbeError", "VideoInfo", "make_inspector", "make_poster", "probe_video"]

PROBE_TIMEOUT = 120.0


class ProbeError(T2VError):
    """The file could not be read as a video."""


@dataclass(frozen=True)
class VideoInfo:
    duration: float | None
    frames: int | None
    width: int | None
    height: int | None
    fps: float | None
    codec: str | None
    format: str | None

    def record_fields(self) -> dict[str, Any]:
        """The fields ``OutputRecord`` holds (duration, frames, width, height, fps)."""
        data = asdict(self)
        return {k: data[k] for k in ("duration", "frames", "width", "height", "fps")}


def _rate(value: Any) -> float | None:
    if value is None:
        return None
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None
    return round(float(rate), 4) if rate > 0 else None


def _num(value: Any, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value) if value not in (None, "", "N/A") else None
    except (TypeError, ValueError):
        return None


def _use_ffmpeg(tool: str, use: bool | None) -> bool:
    return (shutil.which(tool) is not None) if use is None else use


def probe_video(path: str | Path, *, use_ffprobe: bool | None = None) -> VideoInfo:
    """Duration, frame count, size and fps of the first video stream of ``path``."""
    if _use_ffmpeg("ffprobe", use_ffprobe):
        return _probe_ffprobe(Path(path))
    return _probe_pyav(Path(path))


def _probe_ffprobe(path: Path) -> VideoInfo:
    cmd = [
        "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
        "-show_streams", "-show_format", "-of", "json", str(path),
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeError(f"ffprobe failed on {path.name}: {exc}") from exc
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip()[:300]
        raise ProbeError(f"ffprobe cannot read {path.name}: {err}")
    data = json.loads(done.stdout or b"{}")
    streams = [s for s in data.get("streams", []) if s.get("codec_type") == "video"]
    if not streams:
        raise ProbeError(f"{path.name} has no video stream")
    stream, fmt = streams[0], data.get("format", {})
    frames = _num(stream.get("nb_read_frames"), int) or _num(stream.get("nb_frames"), int)
    duration = _num(fmt.get("duration"), float) or _num(stream.get("duration"), float)
    return VideoInfo(
        duration=duration,
        frames=frames,
        width=_num(stream.get("width"), int),
        height=_num(stream.get("height"), int),
        fps=_fps(_rate(stream.get("avg_frame_rate")), frames, duration),
        codec=stream.get("codec_name"),
        format=fmt.get("format_name"),
    )


def _fps(avg: float | None, frames: int | None, duration: float | None) -> float | None:
    if avg is not None:
        return avg
    if frames and duration:
        return round(frames / duration, 4)
    return None


def _probe_pyav(path: Path) -> VideoInfo:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ProbeError(f"{path.name} has no video stream")
            stream = container.streams.video[0]
            # Count by decoding, as `ffprobe -count_frames` does.
            frames = sum(1 for _ in container.decode(stream))
            duration = None
            if container.duration is not None:
                duration = container.duration / av.time_base
            elif stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            return VideoInfo(
                duration=round(duration, 6) if duration is not None else None,
                frames=frames,
                width=stream.codec_context.width or None,
                height=stream.codec_context.height or None,
                fps=_fps(_rate(stream.average_rate), frames, duration),
                codec=stream.codec_context.name,
                format=container.format.name,
            )
    except av.FFmpegError as exc:
        raise ProbeError(f"PyAV cannot read {path.name}: {exc}") from exc


def make_poster(
    video_path: str | Path, out_path: str | Path, *, use_ffmpeg: bool | None = None
) -> Path:
    """Write a JPEG of the middle frame of ``video_path`` to ``out_path``."""
    src, out = Path(video_path), Path(out_path)
    if _use_ffmpeg("ffmpeg", use_ffmpeg):
        info = probe_video(src, use_ffprobe=shutil.which("ffprobe") is not None)
        middle = (info.duration or 0.0) / 2
        cmd = [
            "ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{middle:.3f}", "-i", str(src),
            "-frames:v", "1", "-q:v", "3", "-f", "image2", "-c:v", "mjpeg",
            "-pix_fmt", "yuvj420p", str(out),
        ]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProbeError(f"ffmpeg failed on {src.name}: {exc}") from exc
        if done.returncode != 0 or not out.exists() or out.stat().st_size == 0:
            err = done.stderr.decode("utf-8", "replace").strip()[:300]
            raise ProbeError(f"ffmpeg could not cut a poster from {src.name}: {err}")
        return out
    return _poster_pyav(src, out)


def _poster_pyav(src: Path, out: Path) -> Path:
    import av

    try:
        with av.open(str(src)) as container:
            stream = container.streams.video[0]
            # Count packets (cheap, no decoding) when the header does not say.
            total = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        with av.open(str(src)) as container:
            stream = container.streams.video[0]
            frame = None
            for i, decoded in enumerate(container.decode(stream)):
                frame = decoded
                if i >= total // 2:
                    break
            if frame is None:
                raise ProbeError(f"{src.name} has no frames")
            codec = av.CodecContext.create("mjpeg", "w")
            codec.width = frame.width - frame.width % 2
            codec.height = frame.height - frame.height % 2
            codec.pix_fmt = "yuvj420p"
            codec.time_base = Fraction(1, 25)
            image = frame.reformat(width=codec.width, height=codec.height, format="yuvj420p")
            packets = codec.encode(image) + codec.encode(None)
    except av.FFmpegError as exc:
        raise ProbeError(f"PyAV could not cut a poster from {src.name}: {exc}") from exc
    out.write_bytes(b"".join(bytes(p) for p in packets))
    return out


def make_inspector(
    *,
    storage: Any = None,
    poster_key: str | None = None,
    poster: bool = True,
) -> Callable[[Path], dict[str, Any]]:
    """An ``inspect`` hook for ``download_to_storage``: probe, and store a poster.

    The dict it returns holds ``duration``, ``frames``, ``width``, ``height``, ``fps``,
    ``codec``, ``format`` and, when ``storage`` and ``poster_key`` are given,
    ``poster_uri`` (absent if the poster could not be made).
    """

    def inspect(path: Path) -> dict[str, Any]:
        meta: dict[str, Any] = asdict(probe_video(path))
        if poster and storage is not None and poster_key:
            with tempfile.TemporaryDirectory(prefix="t2v-poster-") as tmp:
                jpg = Path(tmp) / "poster.jpg"
                try:
                    make_poster(path, jpg)
                except ProbeError as exc:
                    meta["poster_error"] = str(exc)
                else:
                    meta["poster_uri"] = storage.put_file(
                        poster_key, jpg, content_type="image/jpeg"
                    )
        return meta

    return inspect
