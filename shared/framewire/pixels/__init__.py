"""Pixels: image headers, decoding and JPEG encoding with limits, letterbox geometry."""
