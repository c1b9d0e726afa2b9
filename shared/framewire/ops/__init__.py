"""Operating a site: the supervisor, status, replay and recovery from the log."""
