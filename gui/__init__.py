"""The nodeflow desktop editor (PySide6)."""

from .compat import protect_none

protect_none()
