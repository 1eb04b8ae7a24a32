"""Training: losses, metrics, the epoch loops, schedulers, checkpoints and sessions, distributed helpers."""
