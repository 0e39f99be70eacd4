"""Branch-train-merge: merging checkpoints' weights, comparing them, branches trained in parallel, and
the pipeline that chains base, branches, merge and fine-tuning."""
