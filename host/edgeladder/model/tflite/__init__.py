"""Read and summarize TFLite models without TensorFlow (numpy is optional)."""

from edgeladder.model.tflite.reader import Operator, Subgraph, Tensor, TfliteModel, read_model

__all__ = ["Operator", "Subgraph", "Tensor", "TfliteModel", "read_model"]
