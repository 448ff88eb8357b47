"""Use-cases: what the CLI, the API and the web UI do, each in one function over a Context."""
