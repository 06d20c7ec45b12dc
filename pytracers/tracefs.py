"""Alias of :mod:`pytracers.kernel.tracefs`, where this module moved; old imports
keep working.

``import pytracers.tracefs`` gives that very module, so setting an attribute
through either name changes the one the library reads.
"""
import sys

from .kernel import tracefs as _home
from .kernel.tracefs import *  # noqa: F401,F403  (what type checkers see)

sys.modules[__name__] = _home
