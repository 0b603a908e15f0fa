"""Rendered files are real videos ffprobe accepts, at the requested size, frames and fps."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from tests.simulator.simhelpers import Sim, ffprobe

SIZES = [(512, 512, 25, 8), (320, 192, 16, 16), (64, 48, 5, 5)]


def download(sim: Sim, fields: dict[str, object], target: Path) -> Path:
    job_id = sim.submit(fields).json()["id"]
    url = sim.wait_status(job_id)["output"][0]
    r = sim.http.get(url, timeout=10)
    assert r.status_code == 200
    target.write_bytes(r.content)
    return target


@pytest.mark.parametrize("output_type", ["mp4", "gif"])
@pytest.mark.parametrize(("width", "height", "frames", "fps"), SIZES)
def test_video_matches_request(
    sim: Sim, tmp_path: Path, output_type: str, width: int, height: int, frames: int, fps: int
) -> None:
    path = download(
        sim,
        {
            "output_type": output_type,
            "width": width,
            "height": height,
            "num_frames": frames,
            "fps": fps,
            "prompt": "a kite over a hill",
        },
        tmp_path / f"v.{output_type}",
    )
    info = ffprobe(path)
    assert (info["width"], info["height"]) == (width, height)
    assert int(info["nb_read_frames"]) == frames
    if output_type == "mp4":
        assert info["codec_name"] == "h264" and info["pix_fmt"] == "yuv420p"
        assert Fraction(info["r_frame_rate"]) == fps
    else:
        assert info["codec_name"] == "gif"
        # GIF delays have 10 ms resolution: the average rate is within a few percent
        assert abs(float(Fraction(info["avg_frame_rate"])) - fps) / fps < 0.05


def test_mp4_odd_size_is_rounded_up_to_even_gif_keeps_it(sim: Sim, tmp_path: Path) -> None:
    odd = {"width": 101, "height": 75, "num_frames": 3, "fps": 4}
    mp4 = ffprobe(download(sim, {**odd, "output_type": "mp4"}, tmp_path / "v.mp4"))
    gif = ffprobe(download(sim, {**odd, "output_type": "gif"}, tmp_path / "v.gif"))
    assert (mp4["width"], mp4["height"]) == (102, 76)
    assert (gif["width"], gif["height"]) == (101, 75)


def test_defaults_are_gif_512_25_frames_8_fps(sim: Sim, tmp_path: Path) -> None:
    info = ffprobe(download(sim, {"prompt": "defaults"}, tmp_path / "v"))
    assert info["codec_name"] == "gif"
    assert (info["width"], info["height"], int(info["nb_read_frames"])) == (512, 512, 25)
    assert Fraction(info["avg_frame_rate"]) == 8


def test_head_gives_length_without_body(sim: Sim) -> None:
    job_id = sim.submit(num_frames=2, width=32, height=32, output_type="mp4").json()["id"]
    url = sim.wait_status(job_id)["output"][0]
    head = sim.http.head(url, timeout=5)
    get = sim.http.get(url, timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(get.content)
    assert head.headers["content-type"] == "video/mp4"
