"""Benchmarks behind `cops bench`: each measures one part of the pipeline, returns its figures."""
