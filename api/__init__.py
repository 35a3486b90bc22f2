"""FastAPI app package: the HTTP edge of the service (schemas, routes, static page)."""
