"""The local development stack: everything `t2v up`, `t2v demo`, the tests and the
benchmarks start on one machine. A running worker never imports it.

    processes.py   how each part starts as a child process, on loopback only: a private
                   Redis, the simulator, a Celery worker (with beat), Flower
    stack.py       ``LocalStack``: those parts together on embedded defaults, and the
                   `t2v up` / `t2v demo` commands (registered as ``t2v.commands`` entry
                   points, so the client finds them without naming this package)
"""
