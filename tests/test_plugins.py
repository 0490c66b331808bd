"""The verifier registry: third-party plugins through the `grpo.verifiers` entry-point group."""

from __future__ import annotations

import sys
import textwrap

import pytest

from grpo_cli.errors import UserError
from grpo_cli.plugins import discover, load_verifier

ACME = """
from grpo_verifiers import Verdict, Verifier


class AcmeVerifier(Verifier):
    name = "acme"

    def __init__(self, bonus: float = 0.0) -> None:
        self.bonus = bonus

    def verify(self, samples):
        return [Verdict(float("acme" in s["completion"]) + self.bonus) for s in samples]


class NotAVerifier:
    pass
"""


def make_dist(root, dist, version, entry_points, modules):
    """A minimal installed distribution: modules plus `<dist>-<version>.dist-info/`."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[grpo.verifiers]\n" + textwrap.dedent(entry_points))
    for name, source in modules.items():
        (root / f"{name}.py").write_text(source)


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    first, later = tmp_path / "first", tmp_path / "later"
    make_dist(
        first,
        "acme-verifier",
        "0.1",
        """\
        acme = acme_verifier:AcmeVerifier
        acme_plain = acme_verifier:NotAVerifier
        """,
        {"acme_verifier": ACME},
    )
    make_dist(
        later,
        "acme-broken",
        "0.2",
        """\
        broken = acme_broken:BrokenVerifier
        acme = acme_broken:AnotherAcme
        """,
        {"acme_broken": "raise ImportError('acme_broken needs libfoo, which is not installed')\n"},
    )
    monkeypatch.syspath_prepend(str(later))
    monkeypatch.syspath_prepend(str(first))  # searched first: its `acme` wins
    for module in ("acme_verifier", "acme_broken"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    yield
    for module in ("acme_verifier", "acme_broken"):
        sys.modules.pop(module, None)


def test_discover_lists_third_party_builtin_and_broken(plugins):
    infos = {(i.name, i.package): i for i in discover()}
    acme = infos["acme", "acme-verifier 0.1"]
    assert (acme.target, acme.status, acme.error) == ("acme_verifier:AcmeVerifier", "ok", None)
    math = next(i for i in infos.values() if i.name == "math")
    assert math.status == "ok" and math.package.startswith("grpo-cli ")
    broken = infos["broken", "acme-broken 0.2"]
    assert broken.status == "error"
    assert broken.error == "ImportError: acme_broken needs libfoo, which is not installed"
    duplicate = infos["acme", "acme-broken 0.2"]
    assert duplicate.status == "error" and "duplicate name 'acme'" in duplicate.error
    assert "acme-verifier 0.1" in duplicate.error
    plain = infos["acme_plain", "acme-verifier 0.1"]
    assert plain.status == "error" and "not a grpo_verifiers.Verifier subclass" in plain.error


def test_load_third_party_verifier_and_score(plugins):
    verifier = load_verifier("acme", {"bonus": 0.5})
    verdicts = verifier.verify([{"completion": "acme inc"}, {"completion": "other"}])
    assert [v.reward for v in verdicts] == [1.5, 0.5]


def test_broken_plugin_is_a_user_error_others_still_load(plugins):
    with pytest.raises(UserError, match=r"'broken' \(acme_broken:BrokenVerifier, from acme-broken 0.2\).*libfoo"):
        load_verifier("broken", {})
    assert load_verifier("acme", {}).verify([{"completion": "acme"}])[0].reward == 1.0
    assert load_verifier("math", {}).name == "math"


def test_unknown_name_suggests_the_nearest(plugins):
    with pytest.raises(UserError) as error:
        load_verifier("acm", {})
    message = str(error.value)
    assert "did you mean 'acme'?" in message
    assert "available: acme, acme_plain, broken" in message and "math" in message
    assert "\n" not in message


def test_bad_options_name_the_verifier(plugins):
    with pytest.raises(UserError, match="verifier 'acme': bad options"):
        load_verifier("acme", {"colour": "red"})
    with pytest.raises(UserError, match="verifier 'math': bad options"):
        load_verifier("math", {"extract": ["nope"]})
