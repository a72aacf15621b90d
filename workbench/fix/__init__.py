"""Fixing accuracy loss: per-layer sensitivity to quantization (hybrid quantization)."""
