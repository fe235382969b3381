"""`kotune plan`: per-GPU memory of a training recipe, before anyone rents a GPU."""
