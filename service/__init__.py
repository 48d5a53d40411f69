"""The HTTP service: Starlette app, routes, errors, metrics, lifecycle and configuration."""

__version__ = "1.0.0"
