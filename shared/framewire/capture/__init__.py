"""Frames in: sources (files, videos, streams, demo cameras), validation, back-pressure, Ingest."""
