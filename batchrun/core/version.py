"""batchrun's version, in one place (the package's ``__version__`` and every page that names it)."""

VERSION = "0.1.0"
