"""The nodeflow desktop editor (PySide6)."""
