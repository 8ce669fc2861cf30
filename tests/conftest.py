"""Imports every test process makes once, in the outer process.

pytester's in-process runs restore `sys.modules` afterwards: a library first imported inside
one of them is dropped, and classes created before and after no longer match (matplotlib's
`Figure` then fails `isinstance(..., Artist)` in a later test; torch cannot be imported twice).
Importing them here keeps one copy for the whole session, whatever order xdist picks.
"""

import matplotlib.backends.backend_agg  # noqa: F401
import matplotlib.figure  # noqa: F401
import torch  # noqa: F401
