"""The topology: stage declarations, and the registry that derives the site from them."""

from framewire.topology.registry import (
    ENTRY_POINT_GROUP,
    TopicInfo,
    Topology,
    stage_settings,
    topology,
)
from framewire.topology.spec import Output, StageSpec

__all__ = ["ENTRY_POINT_GROUP", "Output", "StageSpec", "TopicInfo", "Topology",
           "stage_settings", "topology"]
