"""The pipeline: one admitted record's job, from decision to a terminal audited outcome.

Also the machinery it runs on: :mod:`~connector.pipeline.delivery` (ordered
dispatch, leases, attempts and retries), :mod:`~connector.pipeline.breaker`,
:mod:`~connector.pipeline.ratelimit` and :mod:`~connector.pipeline.rate_share`.

* :mod:`~connector.pipeline.processor` -- admission: parse, map, a job per record;
  error containment (a job never ends by raising);
* :mod:`~connector.pipeline.order` -- an input event's delivery: judge, mark, send
  with retries, end or park;
* :mod:`~connector.pipeline.parking` -- the parking topic: park, deliver when the
  target is back, expire;
* :mod:`~connector.pipeline.steps` -- the steps both share (judge, mark, end);
* :mod:`~connector.pipeline.effects` -- the effect executor (state writes and
  records, durable and fenced) and the ports it writes to;
* :mod:`~connector.pipeline.records` -- audit and dead-letter records, built.

May import the domain (:mod:`connector.domain.events`, :mod:`connector.domain.lifecycle`,
:mod:`connector.domain.audit`, :mod:`connector.errors`), :mod:`connector.pipeline.delivery`,
:mod:`connector.pipeline.breaker`, :mod:`connector.vendors`, settings and tracing; never
Faust, aiokafka or :mod:`connector.kafka` (the Kafka side plugs in through
:class:`~connector.pipeline.effects.StateStore` and
:class:`~connector.pipeline.effects.Sinks`).
"""

from connector.pipeline.effects import Sinks, StateStore
from connector.pipeline.parking import PARKED_AT_HEADER, PARKED_FROM_HEADER
from connector.pipeline.processor import Limiter, Processor

__all__ = ["PARKED_AT_HEADER", "PARKED_FROM_HEADER", "Limiter", "Processor", "Sinks", "StateStore"]
