"""grpo: train language models to reason with GRPO, rewarded by pluggable verifiers."""

__version__ = "0.1.0"
