"""Building the base model: Korean tokenizer training and (continued) causal-LM pre-training."""
