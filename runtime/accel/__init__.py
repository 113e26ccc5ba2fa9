"""Acceleration: run a world's exportable steps through ONNX Runtime, TensorRT, CUDA graphs or torch.compile."""
