"""The stages `grpo sample`, `score` and `eval` run and the trainer shares: problems in (data), the
sample stage (sample), scoring through the verifier plugins (scoring), pass@k / maj@k (metrics),
evaluation (evaluate) and plots (plot)."""
