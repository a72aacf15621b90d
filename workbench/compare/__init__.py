"""Comparing backends: per-tensor metrics, ONNX <-> RKNN name alignment, the Divergence result."""
