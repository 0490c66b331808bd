"""Built-in verifiers for `grpo`, and the types a third-party verifier plugin implements.

Installed as `grpo_verifiers` (never as a top-level `verifiers`, a name another RL library owns).
Every verifier, built-in or not, is registered through the `grpo.verifiers` entry-point group.
"""

from grpo_verifiers.base import Verdict, Verifier

__all__ = ["Verdict", "Verifier"]
