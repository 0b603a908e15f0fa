"""The shared core of t2v-queue: what the application side (``producer``) and the workers
(``worker``) both stand on, and nothing either side alone needs.

    settings.py    ``Settings``: the `T2V_` variables both sides read (the worker extends it)
    states.py      ``JobStatus`` and the only moves allowed between states
    records.py     what a job row is: the job table (``JobRow``), ``JobRecord``/``OutputRecord``
    store.py       ``JobStore``: every read and compare-and-set write of a job row
    db.py          engines for SQLite and PostgreSQL, SQLite's write transactions
    migrate.py     Alembic migrations (``migrations/``), run once per process on first use
    errors.py      the error tree, split by what the caller does
    retry.py       where a retried job resumes (one pure decision)
    names.py       every task, queue and Redis key name the system puts on the wire

It imports neither Celery's worker side, boto3, nor the simulator, and holds no secret:
the API key lives in ``worker.settings`` only.
"""
