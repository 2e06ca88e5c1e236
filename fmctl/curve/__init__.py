"""`fmctl report learning-curve`: the main metric against the number of labels, for a
model trained from scratch and for pretrained starts, every cell a `fmctl finetune`."""
