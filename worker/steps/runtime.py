"""What a step runs with: a ``Runtime`` of passed-in dependencies, built once per worker
process (``worker.tasks.runtime``) or by a test, and the small time helpers every step
uses. Imports no Celery: ``schedule`` is how a step asks for a task to be sent."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import requests

from t2v_core.store import JobStore, utcnow
from worker.limiter import AccountLimiter
from worker.modelslab import ModelsLabClient
from worker.policy import PollPolicy
from worker.settings import WorkerSettings
from worker.storage import Storage
from worker.transfer import TransferLimits

# How long a ``Runtime`` trusts its last "do jobs wait for a slot?" answer (seconds).
CONTENDED_TTL = 2.0
# How long it trusts the recent etas it read for a model (they size a lost answer's slot
# hold, a bound of minutes: a few more renders' etas change nothing that matters).
RECENT_ETAS_TTL = 30.0
# schedule(task name, job id, countdown seconds): send that task for that job.
Schedule = Callable[[str, str, float], None]


@dataclass
class Runtime:
    """Everything a step needs, built once per worker process and passed in."""

    settings: WorkerSettings
    store: JobStore
    client: ModelsLabClient
    limiter: AccountLimiter
    storage: Storage
    http: requests.Session
    schedule: Schedule
    rng: random.Random = field(default_factory=random.Random)
    now: Callable[[], datetime] = utcnow
    # Steps this process runs in place instead of sending their task (``t2v.download``
    # when ``T2V_DOWNLOAD_INLINE`` and this worker consumes its queue).
    inline: frozenset[str] = frozenset()
    # ``contended()``'s last answer and when (``now``, a timestamp) it was read.
    _contended: tuple[bool, float] = field(default=(False, float("-inf")), init=False, repr=False)
    # ``recent_etas``' last answers by model, with when they were read.
    _etas: dict[str, tuple[list[float], float]] = field(
        default_factory=dict, init=False, repr=False
    )

    @property
    def policy(self) -> PollPolicy:
        return PollPolicy.from_settings(self.settings)

    def polling(
        self, policy: PollPolicy, eta: float | None, *, contended: bool | None = None
    ) -> PollPolicy:
        """``policy`` for the next look at a render of this ``eta``: tighter while more jobs
        want an account slot than there are slots (``PollPolicy.when_waiting``). One round
        trip to Redis tells, kept for ``CONTENDED_TTL`` s (a busy worker asks it for every
        poll, and it changes on the scale of renders); ``contended``: just read."""
        if contended is None:
            contended = self.contended()
        else:
            self._contended = (contended, self.now().timestamp())
        if not contended:
            return policy
        return policy.when_waiting(self.settings, eta)

    def contended(self) -> bool:
        seen, at = self._contended
        now = self.now().timestamp()
        if not 0 <= now - at < CONTENDED_TTL:
            seen = self.limiter.contended()
            self._contended = (seen, now)
        return seen

    def recent_etas(self, model: str) -> list[float]:
        """The etas the provider gave lately for ``model`` (``AccountLimiter.recent_etas``),
        read from Redis at most once per ``RECENT_ETAS_TTL`` s: every submit asks."""
        etas, at = self._etas.get(model, ([], float("-inf")))
        now = self.now().timestamp()
        if not 0 <= now - at < RECENT_ETAS_TTL:
            etas = self.limiter.recent_etas(model)
            self._etas[model] = (etas, now)
        return etas

    @property
    def transfer_limits(self) -> TransferLimits:
        return TransferLimits.from_settings(self.settings)

    def at(self, seconds: float) -> datetime:
        """The time ``seconds`` from now."""
        return self.now() + timedelta(seconds=seconds)

    def capped(self, delay: float) -> float:
        """No countdown past the first-poll cap: a server's huge Retry-After must not
        outlive the broker's visibility timeout (the start-up check relies on this bound)."""
        return min(delay, self.settings.poll_max_first_delay)
