"""Training, distillation, pruning, int8 conversion and evaluation (needs the `train` extra)."""
