"""``python -m simulator``: the ModelsLab stand-in on its own (see ``simulator.server``)."""

from __future__ import annotations

import sys

if __name__ == "__main__":  # guarded: render workers are spawned and re-import this module
    from simulator import main

    sys.exit(main())
