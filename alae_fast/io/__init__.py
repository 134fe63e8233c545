"""Files alae_fast reads and writes: checkpoints (checkpoint.py)."""
