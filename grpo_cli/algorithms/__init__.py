"""The GRPO family's math: group-relative advantages and the clipped policy loss with its KL term.
Pure functions over tensors, no model, I/O or config (docs/design.md, "Formulas")."""
