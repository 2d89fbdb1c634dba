"""The methods, and what a method's author needs (docs/extending.md):

    from contraseg.models import Batch, Method, MethodKind, mask_missing, register
"""

from contraseg.models.base import Batch, Method, MethodKind, mask_missing
from contraseg.models.registry import register

__all__ = ["Batch", "Method", "MethodKind", "mask_missing", "register"]
