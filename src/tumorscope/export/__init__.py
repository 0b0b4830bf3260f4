"""Export of a trained run for CPU deployment (ONNX Runtime, FP32 and INT8)."""
