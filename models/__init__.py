"""CNN backbones, decoders, losses and the cost model."""
