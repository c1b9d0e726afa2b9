"""Analytics over the detections: tracks with stable ids, lines and zones, windows, alerts.

The pure core, unit-tested without Kafka: ``settings`` (what to watch, per camera),
``tracking`` (``CameraTracker``: track ids over Roboflow's ``trackers``), ``geometry``
(sides of lines, insides of polygons), ``events`` (``CameraAnalyzer``: line crossings, zone
enter/leave/dwell, window counts, alert rules), ``records`` (the ``AnalyticsEvent`` and
``Alert`` contracts) and ``synthetic`` (boxes moving on known paths). This package imports
nothing at import time, so the contracts can load its ``records`` without a cycle.
"""
