"""nodeflow: a node-graph pipeline engine for controllable image generation."""

__version__ = "0.1.0"
