"""Framewire's own stages, each declared in its package's ``STAGE`` and registered in the
``framewire.stages`` entry-point group; stages meet only through topics."""
