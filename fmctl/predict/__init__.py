"""`fmctl predict`: labels and probabilities for new inputs, from a run folder or an export.

`targets` opens what the user points at (a run folder with PyTorch, an ONNX export with
ONNX Runtime and no torch import, a TorchScript or hf export), `inputs` streams rows or
images with per-row errors, `encode` turns them into model inputs, `output` writes JSONL or
CSV, and `run` drives the batches.
"""
