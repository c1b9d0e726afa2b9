"""Framewire: distributed image processing over Kafka."""

__version__ = "0.1.0"
