"""The REST API (FastAPI): one router per resource, plain `def` routes over the services."""
