"""The gateway: Framewire over HTTP (results, live stream, frame push, dead letters, status)."""
