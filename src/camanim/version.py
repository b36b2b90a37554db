"""The package version, in one place (``camanim.__version__``, manifests, ``camanim --version``)."""

__version__ = "0.1.0"
