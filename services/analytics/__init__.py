"""Analytics: tracks, line crossings, zone stays, window counts and alerts from ``detections``.

It runs on faust-streaming, whose worker runs its own loop: ``entry`` is a function
``main(settings, stop, demo)``, not a runtime ``Stage``. Beside its declared topics, faust keeps
topics of its own, named after the stage's group (``<prefix>framewire-analytics-``): the
changelog of its state table (``-state-changelog``, compacted) and its leader topic
(``-__assignor-__leader``); it creates them at start.
"""

from framewire.analytics.records import Alert, AnalyticsEvent
from framewire.analytics.settings import AnalyticsSettings
from framewire.contracts import InferenceResult
from framewire.topology import Output, StageSpec

STAGE = StageSpec(
    name="analytics", entry="framewire.services.analytics.service:main",
    input="detections", input_contract=InferenceResult, settings=AnalyticsSettings,
    follows=("control",),  # cameras' analytics set over the API
    # events and window counts are small and read back by storage and the gateway: a week
    outputs=(Output("events", AnalyticsEvent, retention="7d"),
             Output("alerts", Alert, retention="30d")),
    # faust's own: <group>-state-changelog and <group>-__assignor-__leader
    internal_topics=("state-changelog", "__assignor-__leader"),
    summary="tracks objects per camera; line crossings, zone stays, window counts, alerts")
