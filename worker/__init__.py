"""t2v-queue workers: Celery tasks that drive ModelsLab and store the videos.

Start with
``celery -A worker worker -Q t2v.submit,t2v.poll,t2v.download,t2v.maintenance,t2v.callbacks``.
"""

from worker.celery_app import app

__all__ = ["app"]
