"""Real video files for simulated jobs: frames drawn with Pillow, encoded to MP4 or GIF.

Runs inside a render worker process (see ``jobs.RenderPool``), never on the request path.
Output is deterministic for the render parameters and cached in the media directory under a
hash of them, so identical requests cost one render.

Choices the real API does not document:
- MP4 is H.264 yuv420p, which needs even dimensions: odd widths/heights are rounded **up** to
  the next even number (511 -> 512; never above the 512 limit). GIF keeps the exact size.
- GIF frame delays have 10 ms resolution: an fps whose period is not a multiple of 10 ms
  alternates delays (12/13 cs for 8 fps) so the average rate matches.

This module must not import the web stack: it is loaded into bare worker processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class RenderSpec:
    """Everything that changes the pixels or the container of one video."""

    prompt: str
    seed: int | None
    width: int
    height: int
    num_frames: int
    fps: int
    output_type: str  # "mp4" | "gif"
    model_id: str

    def cache_key(self) -> str:
        raw = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class RenderResult:
    path: str
    sha256: str
    bytes: int
    seconds: float


def warm_up() -> bool:
    """Import the codecs in a fresh worker so the first real render is not slow."""
    import av  # noqa: F401

    ImageFont.load_default(size=12)
    return True


def render(spec: RenderSpec, media_dir: str) -> RenderResult:
    """Render ``spec`` into ``media_dir/cache`` unless already there; return the file's facts."""
    started = time.perf_counter()
    cache = Path(media_dir) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{spec.cache_key()}.{spec.output_type}"
    if not path.exists():
        frames = draw_frames(spec)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=f".{spec.output_type}.part")
        os.close(fd)
        try:
            if spec.output_type == "gif":
                _write_gif(frames, spec.fps, tmp)
            else:
                _write_mp4(frames, spec.fps, tmp)
            os.replace(tmp, path)  # atomic: a reader never sees half a file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    data = path.read_bytes()
    return RenderResult(
        path=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        seconds=time.perf_counter() - started,
    )


def _palette(spec: RenderSpec) -> list[tuple[int, int, int]]:
    digest = hashlib.sha256(f"{spec.prompt}|{spec.seed}|{spec.model_id}".encode()).digest()
    return [(digest[i], digest[i + 1], digest[i + 2]) for i in range(0, 18, 3)]


def _wrap(
    text: str,
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    width: int,
) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines


def draw_frames(spec: RenderSpec) -> list[Image.Image]:
    """Moving shapes on a seeded colour field, with the prompt written across the frames."""
    w, h = spec.width, spec.height
    if spec.output_type == "mp4":
        w, h = w + (w % 2), h + (h % 2)
    colours = _palette(spec)
    size = max(8, min(w, h) // 16)
    font = ImageFont.load_default(size=size)
    small = ImageFont.load_default(size=max(8, size * 3 // 4))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = _wrap(spec.prompt, probe, font, max(8, w - 2 * size))[: max(1, h // (3 * size))]
    background = Image.new("RGB", (w, h), colours[0])
    bg = ImageDraw.Draw(background)
    for y in range(0, h, max(1, h // 16)):  # cheap vertical gradient in 16 bands
        t = y / max(1, h)
        c = tuple(int(a + (b - a) * t) for a, b in zip(colours[0], colours[1], strict=True))
        bg.rectangle([0, y, w, y + h // 16 + 1], fill=c)
    frames = []
    n = spec.num_frames
    for i in range(n):
        phase = i / max(1, n)
        frame = background.copy()
        d = ImageDraw.Draw(frame)
        r = max(3, min(w, h) // 8)
        cx = int(r + (w - 2 * r) * (0.5 + 0.5 * math.sin(2 * math.pi * phase)))
        cy = int(h * 0.65 + (h * 0.2) * math.cos(2 * math.pi * phase))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colours[2], outline=(255, 255, 255))
        bx = int((w - r) * phase)
        d.rectangle([bx, h - r, bx + r, h - 1], fill=colours[3])
        angle = 2 * math.pi * phase
        px, py = w * 0.8, h * 0.25
        tri = [
            (px + r * math.cos(angle + k * 2.094), py + r * math.sin(angle + k * 2.094))
            for k in range(3)
        ]
        d.polygon(tri, fill=colours[4])
        y = size // 2
        for line in lines:
            d.text((size + 1, y + 1), line, font=font, fill=(0, 0, 0))
            d.text((size, y), line, font=font, fill=(255, 255, 255))
            y += size + size // 3
        d.text((4, h - size - 4), f"{spec.model_id} {i + 1}/{n}", font=small, fill=(255, 255, 0))
        frames.append(frame)
    return frames


def _write_mp4(frames: list[Image.Image], fps: int, path: str) -> None:
    import av

    with av.open(path, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "veryfast", "crf": "28"}
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]  # PyAV stub gap
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def gif_delays_ms(fps: int, count: int) -> list[int]:
    """Per-frame delays in ms, multiples of 10, whose running mean tracks 1000/fps."""
    delays: list[int] = []
    elapsed_cs = 0
    for i in range(1, count + 1):
        target_cs = round(i * 100 / fps)
        delays.append((target_cs - elapsed_cs) * 10)
        elapsed_cs = target_cs
    return delays


def _write_gif(frames: list[Image.Image], fps: int, path: str) -> None:
    quantised = [f.quantize(colors=128, method=Image.Quantize.FASTOCTREE) for f in frames]
    quantised[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=quantised[1:],
        duration=gif_delays_ms(fps, len(frames)),
        loop=0,
        optimize=False,
        disposal=1,
    )
