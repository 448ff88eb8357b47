"""The typed answers of the API: one pydantic model per resource shape, so that the OpenAPI
document describes every response and clients can be generated from it. The JSON is the one the
services' views produce; the models describe it, they do not reshape it."""
