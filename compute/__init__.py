"""Pure payload analysis: schema, kernels, the worker entry point, the pool, the hand-off of bodies
to it, the allocator settings its processes share, and the dispatcher.

Nothing in this package knows about HTTP.
"""
