"""COPS: combinatorial optimisation for panoptic segmentation."""

__version__ = "0.1.0"
