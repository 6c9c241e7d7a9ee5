"""The training engine: DeepSpeed setup, optimisation, the loop, metrics, evaluation and checkpoints."""
