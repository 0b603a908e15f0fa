"""ModelsLab text-to-video: the HTTP client and the normalisation of everything it may answer.

    client.py    ``ModelsLabClient``: one pooled ``requests`` session, (connect, read)
                 timeouts, one call per method and no retries; the API key goes only into
                 the JSON body and is scrubbed from every error; a submit that may have
                 been accepted raises ``SubmitOutcomeUnknown``
    answers.py   ``parse_response`` (pure, no HTTP library): status / id / output shapes,
                 errors classified into ``TransientError`` / ``PermanentError`` /
                 ``RateLimited``; ``ProviderResult``, ``ProviderStatus``,
                 ``SubmitOutcomeUnknown``, ``scrub``

Import from here (``from worker.modelslab import ModelsLabClient, ProviderResult``): the
split into two modules is for reading, not for callers.

Never: add retries, sleeps, or anything that shows the API key.
"""

from worker.modelslab.answers import (
    SPAM_FILTER_WAIT,
    ProviderResult,
    ProviderStatus,
    SubmitOutcomeUnknown,
    flatten_message,
    parse_response,
    scrub,
)
from worker.modelslab.client import ModelsLabClient

__all__ = [
    "SPAM_FILTER_WAIT",
    "ModelsLabClient",
    "ProviderResult",
    "ProviderStatus",
    "SubmitOutcomeUnknown",
    "flatten_message",
    "parse_response",
    "scrub",
]
