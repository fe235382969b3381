"""The training loop shared by stages that optimise a causal LM on token batches (sft, pretrain)."""
