"""`fmctl probe SOURCE`: judge a backbone without fine-tuning it (linear and k-NN probes
on frozen features, as the MAE, DINO and CLIP papers report them)."""
