"""Backbones (transformers and timm) behind one contract, and their heads."""
