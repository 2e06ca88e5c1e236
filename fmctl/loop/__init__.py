"""The one shared training loop and what it is made of."""
