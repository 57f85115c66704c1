"""Assessment results connector: Kafka lifecycle events to Kombo and Comeet."""
