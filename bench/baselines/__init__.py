"""Baselines the connector is measured against (each runs as its own process).

- :mod:`bench.baselines.naive_faust`: the Faust agent a first-time user writes, one
  awaited HTTP call per event.
- :mod:`bench.baselines.aiokafka_loop`: a hand-written aiokafka consumer loop with
  per-key ordering, bounded concurrency and commits up to the oldest unfinished
  offset per partition ("no framework").

Both read :class:`bench.baselines.common.BaselineConfig` from ``BENCH_*`` variables
and print ``{"assigned": [partitions]}`` lines on stdout whenever their assignment
changes, which is how the benchmark knows they are ready.
"""
