"""What each task does, as plain functions over a ``Runtime`` of passed-in dependencies.

One module per step, each read top to bottom: load the row, decide (a pure function where
the decision is more than a line), apply the effects.

    runtime.py       ``Runtime``: settings, job store, ModelsLab client, limiter, storage,
                     HTTP session, ``schedule`` (how a step sends a task), rng, clock
    submit.py        ``submit_step``: take a slot, send once, record the answer
    admit.py         ``admit_step``: a batch of new jobs joins the slot line in one pass
    poll.py          ``poll_step``: fetch the status; ``decide_poll``; quiet polls of
                     cancelled renders
    download.py      ``download_step``: copy the outputs into storage;
                     ``decide_download_failure``
    transitions.py   the moves they share, also used by reconcile and the webhook
                     receiver: ``fail``, ``park``, ``resume``, ``poll_known_render``...
    slots.py         account slots as the steps use them: ``may_be_rendering``, holds,
                     wake-ups, ``rebuild_line``

A step never sleeps: when something is not ready it asks ``rt.schedule`` to run it again
with a countdown. Every step claims its job by compare-and-set, so a copy of a message
that arrives twice, late, or for a job that moved on does nothing.

Money rules (where each is kept):
- a submit whose outcome is unknown is never repeated at once (``submit.outcome_unknown``;
  reconcile resubmits after ``submit_unknown_wait``, recorded in ``unknown_submits``);
- never a submission while a provider id is known; the id and the move to `processing`
  are one statement (``submit.after_submit``, ``transitions.poll_known_render``);
- a paid render is never thrown away by our own limits: it is parked
  (``transitions.park``) and ``resume``-d from its last paid step;
- an account slot is held exactly while the provider may be rendering for us
  (``slots.may_be_rendering``), and every freed slot wakes the oldest waiting job.

Nothing here imports Celery: tests drive the steps with real services and a recording
``schedule``.
"""

from worker.steps.admit import admit_step
from worker.steps.download import download_step
from worker.steps.poll import poll_step
from worker.steps.runtime import Runtime, Schedule
from worker.steps.submit import submit_step

__all__ = ["Runtime", "Schedule", "admit_step", "download_step", "poll_step", "submit_step"]
