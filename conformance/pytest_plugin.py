"""pytest plugin of the kit (registered through the ``pytest11`` entry point): fixtures for the fakes."""
