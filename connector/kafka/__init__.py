"""The Kafka adapter: everything faust-streaming, mode, aiokafka, httpx and httpx-aiohttp
give the connector beyond their documented API, and nothing else.

No module outside this package may use a private name of those libraries
(``tests/kafka/test_boundary.py`` reads the code to enforce it). The libraries are
pinned exactly in ``pyproject.toml``, and :mod:`connector.kafka.compat` refuses to start
a worker on other versions or when an internal used here is missing or changed shape.

Modules:

* :mod:`~connector.kafka.driver` -- the Faust transport driver and its consumer
  (registered as the ``connector`` driver in the ``faust.transports`` entry points);
* :mod:`~connector.kafka.guard` -- the fetch side of at-least-once (sequencing, seeks);
* :mod:`~connector.kafka.commits` -- the commit coordinator;
* :mod:`~connector.kafka.intake` -- records from each fetch to the processor;
* :mod:`~connector.kafka.faust_app` -- the app (fencing on rebalance), the table
  store, the producer sinks, the topic subscriptions;
* :mod:`~connector.kafka.recovery` -- the table-recovery fixes;
* :mod:`~connector.kafka.http` -- the httpx client on aiohttp's pool;
* :mod:`~connector.kafka.compat` -- the exact versions and the start-up self-check.

May import: the pure core (:mod:`connector.domain.offsets`, :mod:`connector.domain.lifecycle`,
:mod:`connector.domain.audit`), settings and metrics; never the pipeline
(:mod:`connector.pipeline`, :mod:`connector.pipeline.delivery`) nor :mod:`connector.app`.
"""

__all__: list[str] = []
