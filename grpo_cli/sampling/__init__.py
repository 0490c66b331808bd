"""Sampling backends behind one `Sampler` interface."""
