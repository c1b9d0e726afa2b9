"""The broker side: client settings, topics, the managed Apache Kafka cluster, lag, placement."""
