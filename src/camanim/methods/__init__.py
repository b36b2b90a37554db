"""CAM methods behind one registry (``camanim methods`` lists them)."""

from . import activation, gradient  # noqa: F401  (registers the built-in methods)
from .core import CamMethod, MethodContext, cam_method, get_method, list_methods, register_method

__all__ = ["CamMethod", "MethodContext", "cam_method", "get_method", "list_methods", "register_method"]
