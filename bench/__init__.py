"""End-to-end benchmark of the connector against two baselines, on the local broker and sandboxes.

Entry point: ``python -m bench.run`` (see :mod:`bench.run` and BENCHMARKS.md).

Modules:

- :mod:`bench.workload`: the lifecycle events, their produce timestamps, producing them.
- :mod:`bench.processes`: starting, readying, measuring and stopping the implementations.
- :mod:`bench.observe`: the sandbox side: counting and reading the recorded requests.
- :mod:`bench.analysis`: delivered events, latency percentiles, per-order order.
- :mod:`bench.report`: machine details and the markdown tables.
- :mod:`bench.sdk_micro`: Kombo SDK against the hand-written KomboClient.
- :mod:`bench.state`: worker RSS with many orders in the table.
- :mod:`bench.baselines`: the naive Faust agent and the hand-written aiokafka loop.
"""
