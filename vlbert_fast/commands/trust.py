"""The `--trust-foreign` option shared by the commands that load checkpoints."""

TRUST_FOREIGN_HELP = (
    "also load a checkpoint that has no manifest of ours (DeepSpeed's universal conversion, an older version's "
    "checkpoint, a bare .pt state dict): its files cannot be verified, so only do this for files you trust. They are "
    "still loaded weights-only: tensors and plain values, never code"
)
