"""The training loop (trainer) and what only it needs: micro-batching, checkpoints and exact resume,
the optimizer and schedule, and the model wrapping for DDP / FSDP2."""
