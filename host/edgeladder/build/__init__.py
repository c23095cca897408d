"""Building a task's tiers: recipe, dataset, training, distillation, pruning, int8.

Needs the `train` extra (TensorFlow).
"""
