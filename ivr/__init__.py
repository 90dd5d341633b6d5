"""The ``ivr`` engine: a pluggy-based IVR that runs YAML call flows on simplesip calls.

Plugin authors need only :data:`hookimpl` (``from ivr import hookimpl``), the types in
:mod:`ivr.call` and, for their tests, :mod:`ivr.testing`; every hook is specified in
:mod:`ivr.hookspecs` (docs/plugins.md).
"""

from ivr.hookspecs import hookimpl, hookspec

__version__ = "0.2.0"

__all__ = ["hookimpl", "hookspec", "__version__"]
