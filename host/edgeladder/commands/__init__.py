"""Click commands: thin wrappers that parse options and call the typed API."""
