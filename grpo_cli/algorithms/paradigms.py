"""The algorithms as rows of DeepSeekMath's unified paradigm (section 5.2.1): every method is the
same policy-gradient loop with a different data source and gradient coefficient.

| algorithm  | data source                       | gradient coefficient             |
|------------|-----------------------------------|----------------------------------|
| sft        | the dataset's solutions           | 1                                |
| rft        | samples of the initial model      | 1 if correct, else 0             |
| online_rft | samples of the current policy     | 1 if correct, else 0             |
| grpo       | samples of the current policy     | group-relative advantage         |

The trainer reads a `Paradigm`'s fields instead of testing algorithm names.
"""

from __future__ import annotations

from dataclasses import dataclass

from grpo_cli.algorithms.registry import Registry


@dataclass(frozen=True)
class Paradigm:
    """source: `dataset`, `initial_model` or `policy`; coefficient: `one`, `correct` (kinds of
    `advantages.ADVANTAGES`) or `advantage` (the configured `train.advantage.kind`)."""

    source: str
    coefficient: str

    @property
    def samples(self) -> bool:
        """Whether the batch is sampled (and scored), rather than read from the dataset."""
        return self.source != "dataset"

    @property
    def on_policy(self) -> bool:
        """Whether the samples come from the policy being trained, so their sampling-time
        log-probs are the old policy's (PPO's ratio needs them)."""
        return self.source == "policy"

    @property
    def frozen_sampler(self) -> bool:
        """Whether the samples come from the initial model, kept frozen beside the policy (RFT)."""
        return self.source == "initial_model"

    def advantage(self, configured: str) -> str:
        """The `advantages.ADVANTAGES` kind this row trains with, given `train.advantage.kind`."""
        return configured if self.coefficient == "advantage" else self.coefficient


ALGORITHMS: Registry[Paradigm] = Registry("algorithm")
ALGORITHMS.register("grpo")(Paradigm(source="policy", coefficient="advantage"))
ALGORITHMS.register("rft")(Paradigm(source="initial_model", coefficient="correct"))
ALGORITHMS.register("online_rft")(Paradigm(source="policy", coefficient="correct"))
ALGORITHMS.register("sft")(Paradigm(source="dataset", coefficient="one"))
