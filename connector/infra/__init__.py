"""Infrastructure: configuration errors, logs, metrics, traces, Kafka clients, topics.

Shared by the worker and the operator tools; knows nothing of the pipeline's rules.
May import :mod:`connector.settings`, :mod:`connector.errors`, the domain and the
vendor registry (for label values); never the pipeline, the Kafka adapter, the
operator tools or the worker's wiring (``tests/test_layout.py``).
"""
