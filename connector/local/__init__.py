"""Local stand-ins for the connector's infrastructure (a real Kafka broker for tests and dev)."""
