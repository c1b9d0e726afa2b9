"""Avro contracts shipped with Framewire (the *.avsc files beside this module)."""
