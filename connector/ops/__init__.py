"""Operator tools: the ``connector`` commands other than ``worker``.

``check``, ``audit tail``, ``order show`` (and ``GET /orders/{key}``), ``dlq
list/replay``, ``target pause/resume/forget/list``, ``topics generate``, ``topics
migrate``, ``demo``, the first-start guard, and the commands' plain-text help.

May import anything in the connector except the worker's wiring; nothing outside
:mod:`connector.cli` (and :mod:`connector.app`, for the worker's web pages and the
control topic) imports them (``tests/test_layout.py``).
"""
