"""Reproduce docs/web-list.png and docs/web-job.png: the results page after a real run.

Starts the local stack the way `make demo` does (a private Redis, the simulator, a Celery
worker, and `t2v web`), in a temporary directory so nothing of yours is touched; runs a
few jobs to the end (the demo's prompt among them, a GIF, one cancelled); then takes the
screenshots in headless Chromium (Debian's /usr/bin/chromium through Playwright).

    .venv/bin/python scripts/screenshots.py [--out docs] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPTS = [
    ("A cat walking across a sunny room, tail swaying", "mp4"),
    ("A paper boat drifting down a rainy gutter", "mp4"),
    ("A lighthouse in fog, waves below", "gif"),
    ("A red kite over a windy beach", "mp4"),
    ("Timelapse of clouds over a mountain ridge", "mp4"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    from worker.devstack import processes

    for key in [k for k in os.environ if k.startswith("T2V_")]:
        del os.environ[key]
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        # Nothing listens there: the stack starts its own private Redis, as for a newcomer.
        os.environ["T2V_BROKER_URL"] = f"redis://127.0.0.1:{processes.free_port()}/0"
        from worker.devstack.stack import running_stack

        with running_stack(Path(tmp) / "run", flower=False, render_mean=2.0) as stack:
            web = next(p for p in stack.procs if p.name == "web")
            job_id = run_jobs()
            shoot(web.url, job_id, out, args.chromium)
    print(f"wrote {out / 'web-list.png'} and {out / 'web-job.png'}")
    return 0


def run_jobs() -> str:
    import producer

    small = {"num_frames": 24, "width": 384, "height": 256, "fps": 8}
    jobs = [producer.enqueue({"prompt": p, "output_type": t, **small}) for p, t in PROMPTS]
    doomed = producer.enqueue({"prompt": "A job cancelled before it ran", **small})
    producer.cancel(doomed.id)
    for job in jobs:
        job.wait(timeout=300)
    return str(jobs[0].id)


def shoot(url: str, job_id: str, out: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(url + "/")
        page.wait_for_function(
            "[...document.querySelectorAll('img.poster')].every(i => i.complete && i.naturalWidth)"
        )
        page.screenshot(path=str(out / "web-list.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 1100})
        page.goto(f"{url}/jobs/{job_id}")
        page.evaluate("document.querySelector('video.player').play()")
        page.wait_for_function("document.querySelector('video.player').currentTime > 1.0")
        page.evaluate("document.querySelector('video.player').pause()")
        # Two animation frames: the paused frame is painted before the shot.
        page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        page.screenshot(path=str(out / "web-job.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
