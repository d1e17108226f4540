"""trt-neg: Darwin-9B-NEG (Qwen3.5 + Native Entropy Gating) on TensorRT-LLM.

Importing this package needs only torch: tensorrt, tensorrt_llm and CUDA are imported
lazily by the functions that use them.
"""

__version__ = "0.1.0"
