"""The conformance engine: scenarios, simulator, monitor, checks and the command line."""
