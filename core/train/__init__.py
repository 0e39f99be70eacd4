"""Training: the Trainer and its objectives (pretraining, `sft`, `dpo`), token files and batches, the
resume state, events and the monitor that folds them, and running under torchrun."""
