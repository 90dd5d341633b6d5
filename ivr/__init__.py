"""The ``ivr`` engine: a pluggy-based IVR that runs YAML call flows on simplesip calls.

Plugin authors need only :data:`hookimpl` (``@ivr.hookimpl``) and the types in :mod:`ivr.call`;
every hook is specified in :mod:`ivr.hookspecs`.
"""

from ivr.hookspecs import hookimpl, hookspec

__version__ = "0.2.0"

__all__ = ["hookimpl", "hookspec", "__version__"]
