"""The grpo verifier contract, run against this plugin, plus the plugin's own behaviour."""

from __future__ import annotations

from grpo_answer_format import AnswerFormatVerifier
from grpo_verifiers.testing import VerifierContract

SAMPLES = [
    {"prompt": "2 + 2?", "answer": "4", "completion": "2 + 2 = 4\n#### 4"},
    {"prompt": "2 + 2?", "answer": "4", "completion": "The answer is 4."},
    {"prompt": "2 + 2?", "answer": "4", "completion": "#### 4\nand then some more text"},
]


class TestAnswerFormatContract(VerifierContract):
    verifier_class = AnswerFormatVerifier
    options = {"style": "hash"}
    bad_options = ({"style": "xml"}, {"pattern": "("}, {"bonus": "lots"}, {"colour": "red"})
    entry_point = "answer_format"  # checks the installed package's entry point too
    samples = SAMPLES


def test_styles():
    def rewards(**options):
        return [v.reward for v in AnswerFormatVerifier(**options).verify(SAMPLES)]

    assert rewards() == [1.0, 0.0, 0.0]
    assert rewards(bonus=0.5) == [0.5, 0.0, 0.0]
    assert rewards(pattern=r".*answer is \d+\.") == [0.0, 1.0, 0.0]
    r1 = AnswerFormatVerifier(style="r1").verify([{"completion": "<think>2+2</think>\n<answer>4</answer>"}])
    assert r1[0].reward == 1.0
