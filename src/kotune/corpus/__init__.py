"""`kotune corpus`: refine, deduplicate and tokenize Korean pre-training corpora on Hugging Face's datatrove."""
