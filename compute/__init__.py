"""Pure payload analysis: schema, kernels, the worker entry point, the pool and the dispatcher.

Nothing in this package knows about HTTP.
"""
