"""Stage 4: one module per target turns the target-neutral policy into that target's output."""
