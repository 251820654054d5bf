"""Domain services: every business rule lives here, none in the handlers or scripts."""
