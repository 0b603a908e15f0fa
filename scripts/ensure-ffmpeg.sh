#!/usr/bin/env bash
# ffprobe/ffmpeg check stored videos and cut posters. The worker falls back to PyAV without
# them, but the tests use the real ffprobe as the independent judge, so install it when we can.
set -u
command -v ffprobe >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ffmpeg (for ffprobe) with apt-get..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg) >/dev/null 2>&1
fi
if ! command -v ffprobe >/dev/null 2>&1; then
  echo "warning: ffprobe not found; the worker will probe videos with PyAV instead." >&2
  if [ "${CI:-}" = "true" ]; then echo "CI=true: ffprobe is required for the tests" >&2; exit 1; fi
fi
exit 0
