"""The full-size models (Mixtral 8x7B, 8x22B): presets, parameter/KV/FLOP counts, and
shapes traced on the meta device without allocating a byte of weights."""
