"""Small reference models for the main jobs (encoders, calibrators)."""

from neurotorch.models.linear_encoder import LinearEncoder

__all__ = ["LinearEncoder"]
