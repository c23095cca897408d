"""Datasets: the bundled defaults and user ``.npz`` files, validated and split."""

from .dataset import Dataset, Split, load_dataset, normalize_stats, split_dataset

__all__ = ["Dataset", "Split", "load_dataset", "normalize_stats", "split_dataset"]
