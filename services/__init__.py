"""Framewire services: stage logic plus thin entry points."""
