"""From images to panoptic predictions: cost network, AMWC solve, post-processing, outputs."""
