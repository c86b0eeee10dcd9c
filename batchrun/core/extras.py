"""The optional extras (``pip install 'batchrun[redis]'`` ...): their modules, loaded only by
the feature that needs one, and the one error when it is missing.

A feature asks for its module with ``require_extra`` at the moment it is asked for, before
anything is sent; a missing module is then one line naming the command that installs it,
never an ``ImportError`` traceback:

    redis = require_extra("redis", "redis", option("rate_limit_store"))
"""

from __future__ import annotations

import importlib
from types import ModuleType

from batchrun.core.errors import MissingExtraError


def require_extra(module: str, extra: str, feature: str) -> ModuleType:
    """``module``, imported; MissingExtraError naming ``pip install 'batchrun[extra]'`` when
    it cannot be. ``feature`` is what needs it, as the reader would name it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        missing = isinstance(exc, ModuleNotFoundError) and (exc.name or "").partition(".")[0] == top
        why = "is not installed" if missing else f"cannot be imported ({exc})"
        raise MissingExtraError(
            f"{feature} needs the `{top}` package, which {why}: {install_hint(extra)}",
            module=module,
            extra=extra,
        ) from None


def install_hint(extra: str) -> str:
    """The command that installs the optional extra ``extra``."""
    return f"pip install 'batchrun[{extra}]'"


def has_extra(module: str) -> bool:
    """Whether ``module`` can be imported (for a feature that works without it, less well)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
