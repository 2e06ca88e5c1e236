"""Readers, built-in datasets, splits, tokenizer training and collators."""
