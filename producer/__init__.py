"""t2v-queue, the application side: describe a video, enqueue it, read what became of it.

    from producer import Text2VideoRequest, enqueue
    job = enqueue(Text2VideoRequest(prompt="A cat walking across a sunny room"))
    record = job.wait(timeout=900)   # JobFailed / JobTimeout carry the record
    record.outputs[0].storage_uri

Importing this package never imports the worker, Celery workers' code or boto3: jobs are
sent to workers by task name.
"""

from producer.aio import acancel, aenqueue, aenqueue_many, aget_job, alist_jobs, aretry
from producer.api import Producer
from producer.default import (
    cancel,
    configure,
    enqueue,
    enqueue_many,
    get_job,
    list_jobs,
    retry,
)
from producer.job import Job
from producer.request import Text2VideoRequest, UnknownModelWarning
from t2v_core.errors import (
    ConfigError,
    EnqueueError,
    FieldError,
    JobError,
    JobFailed,
    JobNotFound,
    JobParked,
    JobTimeout,
    PermanentError,
    RateLimited,
    RequestInvalid,
    RetryRefused,
    T2VError,
    TransientError,
)
from t2v_core.fairness import JobOptions
from t2v_core.records import JobRecord, OutputRecord
from t2v_core.settings import Settings, get_settings
from t2v_core.states import JobStatus

__all__ = [
    "ConfigError",
    "EnqueueError",
    "FieldError",
    "Job",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobOptions",
    "JobParked",
    "JobRecord",
    "JobStatus",
    "JobTimeout",
    "OutputRecord",
    "PermanentError",
    "Producer",
    "RateLimited",
    "RequestInvalid",
    "RetryRefused",
    "Settings",
    "T2VError",
    "Text2VideoRequest",
    "TransientError",
    "UnknownModelWarning",
    "acancel",
    "aenqueue",
    "aenqueue_many",
    "aget_job",
    "alist_jobs",
    "aretry",
    "cancel",
    "configure",
    "enqueue",
    "enqueue_many",
    "get_job",
    "list_jobs",
    "retry",
    "get_settings",
]
