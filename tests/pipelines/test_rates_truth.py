"""The rate policy against the simulator's truth: oracle, best uniform rate, logging policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from cashback.settings import Settings
from pipelines.rates_truth import against_truth
from pipelines.train_rates import run

PEPPER = "test-pepper-not-a-secret"


@pytest.mark.xdist_group("simulated_worlds")
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="open (issue 7): the policy reaches about 75 % of the oracle and trails the best "
    "uniform rate by about 1 % at the same spend on the default world; the bars are 80 % "
    "and +20 %",
)
def test_the_policy_reaches_the_oracle_and_beats_uniform_rates_on_the_default_world(
    default_world: Path, tmp_path: Path
) -> None:
    # given the default world's rates learnt and priced without a budget (outputs in tmp)
    settings = Settings(data_dir=default_world, ip_pepper=PEPPER)
    result = run(settings, output_dir=tmp_path)

    # when the policy is scored on the truth
    found = against_truth(settings, result)
    print(
        f"\nrates vs truth: {found.share_of_oracle:.1%} of the oracle, "
        f"{found.gain_over_best_uniform:+.1%} against the best uniform rate "
        f"({found.best_uniform:.0%}); logging {found.logging:,.0f}, ours {found.ours:,.0f}"
    )

    # then it has at least 80 % of the oracle's value and 20 % more than the best uniform
    # rate at the same spend
    assert found.share_of_oracle >= 0.8
    assert found.gain_over_best_uniform >= 0.2
