"""The pure domain: what an event is, what an order's lifecycle allows, what is recorded.

* :mod:`~connector.domain.events` -- record bytes to a validated event; order keys;
* :mod:`~connector.domain.lifecycle` -- OPEN -> COMPLETED / CANCELLED: the decision
  (:func:`~connector.domain.lifecycle.judge`) and the order state it reads and writes;
* :mod:`~connector.domain.audit` -- the audit and dead-letter records;
* :mod:`~connector.domain.context` -- the event a task is working on;
* :mod:`~connector.domain.offsets` -- admission in offset order (the sequencer);
* :mod:`~connector.domain.published_schema` -- what the published JSON Schemas add.

Plain functions and models, testable without Kafka or HTTP. May import only the
standard library, pydantic, :mod:`connector.errors` and each other
(``tests/test_layout.py`` enforces it).
"""
