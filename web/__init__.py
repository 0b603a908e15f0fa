"""`t2v web`: the results page and the JSON API beside it, on one small Starlette server.

    app.py       the app (``create_app``) and the ``t2v web`` command (``main``)
    settings.py  ``WebSettings``: the T2V_ settings plus ``T2V_WEB_TOKEN``
    auth.py      the token (Bearer for the API, a login cookie for pages), CSRF, same-origin
    views.py     the HTML pages: the list, a job, login; retry and cancel forms
    api.py       ``/api/v1/``: jobs (create, read, list, cancel, retry) and its OpenAPI schema
    openapi.py   the OpenAPI 3 document, built from the request model and ``ENQUEUE_OPTIONS``
    media.py     videos and posters from storage: local files with Range, S3 presigned URLs
    timeline.py  a job's steps and their durations, read from its record (pure)
    overview.py  the counts at the top of the list and the account's slots (Redis)

Never: hold, show or log the ModelsLab API key (this package reads ``t2v_core`` settings,
which have none, and the saved request, which never carries it); serve a file outside the
storage root; bind beyond loopback without ``T2V_WEB_TOKEN``; render user text unescaped.
"""
