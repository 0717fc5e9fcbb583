"""Dataset converters, the prepared-format reader, targets and augmentations."""
