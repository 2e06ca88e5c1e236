"""`fmctl predict`: predictions for new inputs, from a run folder or an export, for every
task that has something to predict: labels with probabilities, numbers, label sets, tags
per word, answer spans, translations and generated text.

`targets` opens what the user points at (a run folder with PyTorch, an ONNX export with
ONNX Runtime and no torch import, a TorchScript or hf export) and holds the task table,
`inputs` streams rows or images with per-row errors, `encode` turns them into model inputs
(with what is needed to map outputs back to words or context characters), `decode` turns
outputs into records, `generate` runs the generation tasks, `output` writes JSONL or CSV,
and `run` drives the batches.
"""
