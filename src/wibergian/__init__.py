"""wibergian: the minimum of an energy function as a trainable layer."""
