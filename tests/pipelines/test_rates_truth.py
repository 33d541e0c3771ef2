"""The rate policy against the simulator's truth: oracle, best uniform rate, logging policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cashback.settings import Settings
from pipelines.rates_truth import OpeTruth, TruthComparison, against_truth, ope_against_truth
from pipelines.simulation.truth import load_truth
from pipelines.train_rates import RatesTraining, run

PEPPER = "test-pepper-not-a-secret"


# One rates run per world, shared by the tests below (a run takes minutes).


def _rates(world: Path, output_dir: Path) -> tuple[Settings, RatesTraining]:
    """A world's rates, learnt and priced without a budget (outputs in `output_dir`)."""
    settings = Settings(data_dir=world, ip_pepper=PEPPER)
    return settings, run(settings, output_dir=output_dir)


@pytest.fixture(scope="module")
def default_rates(
    default_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, RatesTraining]:
    """The default world's rates run."""
    return _rates(default_world, tmp_path_factory.mktemp("rates-default"))


@pytest.fixture(scope="module")
def hard_rates(
    hard_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, RatesTraining]:
    """The hard world's rates run."""
    return _rates(hard_world, tmp_path_factory.mktemp("rates-hard"))


@pytest.fixture(scope="module")
def default_ope(default_rates: tuple[Settings, RatesTraining]) -> OpeTruth:
    """The default run's off-policy estimates beside the truth."""
    return ope_against_truth(*default_rates)


@pytest.fixture(scope="module")
def hard_ope(hard_rates: tuple[Settings, RatesTraining]) -> OpeTruth:
    """The hard run's off-policy estimates beside the truth."""
    return ope_against_truth(*hard_rates)


def _report(world: str, found: OpeTruth) -> None:
    print(
        f"\n{world} world, {found.exposures:,} held-out exposures of {found.customers:,} "
        f"customers ({found.left_out:,} left out): net margin per exposure"
    )
    print(f"  our policy: truth {found.truth:.3f}")
    for name, estimate in found.estimates.items():
        print(
            f"    {name:>5} {estimate.value:8.3f} [{estimate.low:.3f}, {estimate.high:.3f}] "
            f"error {found.error(name):+.1%}"
        )
    oracle = found.oracle_dr
    print(
        f"    DR with the truth as reward model {oracle.value:.3f} "
        f"[{oracle.low:.3f}, {oracle.high:.3f}] error {oracle.value / found.truth - 1:+.1%}"
    )
    for rate, (true_value, estimates) in found.uniform.items():
        errors = ", ".join(f"{n} {e.value / true_value - 1:+.1%}" for n, e in estimates.items())
        print(f"  uniform {rate:.0%}: truth {true_value:.3f}; {errors}")


@pytest.mark.xdist_group("simulated_worlds")
@pytest.mark.parametrize("world", ["default", "hard"])
def test_the_truth_of_the_logged_rates_is_the_realised_net_margin(
    world: str, request: pytest.FixtureRequest
) -> None:
    # given a world's rates run and its held-out exposures against the truth
    settings, result = request.getfixturevalue(f"{world}_rates")
    found: OpeTruth = request.getfixturevalue(f"{world}_ope")
    realised = found.logging
    print(
        f"\n{world} world, logged rates: truth {found.logged_truth:.3f}, realised "
        f"{realised.value:.3f} [{realised.low:.3f}, {realised.high:.3f}] "
        f"({realised.value / found.logged_truth - 1:+.1%})"
    )

    # when the logging policy's probability of each logged rate is read from the truth
    truth = load_truth(settings.data_dir)
    test = result.data.test.join(
        truth.exposures.collect(), on="exposure_id", how="left", maintain_order="left"
    )
    exploration, rates = truth.config.exploration, len(truth.config.rate_grid)
    on_policy = np.isclose(test["rate"].to_numpy(), test["policy_rate"].to_numpy())
    probability = (1 - exploration) * on_policy + exploration / rates
    weight = probability / test["propensity"].to_numpy()

    # then the logged propensities are the logging policy's, so its IPS value (weights
    # probability / propensity) is the realised mean net margin
    reward = test["net_margin"].to_numpy()
    assert np.mean(weight * reward) == pytest.approx(np.mean(reward), rel=1e-9)
    # and on the exposures whose truth is exact, the truth of the logged rates is the
    # realised mean net margin within 3 %, inside the realised mean's 95 % interval
    assert realised.value == pytest.approx(found.logged_truth, rel=0.03)
    assert realised.covers(found.logged_truth)


HARD_DR_OPEN = pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="open (issue 7): on the hard world the DR estimate is 10.278 [9.574, 10.978] "
    "against a truth of 10.823 per exposure (-5.0 %; IPS -5.3 %, SNIPS -4.0 %), its interval "
    "covers the truth; sampling noise, not the reward model: DR with the truth as its reward "
    "model errs -5.3 %, and the interval's half-width (6.5 %) is wider than the 5 % bar",
)


@pytest.mark.xdist_group("simulated_worlds")
@pytest.mark.parametrize("world", ["default", pytest.param("hard", marks=HARD_DR_OPEN)])
def test_the_dr_estimate_of_the_policy_is_within_5_percent_of_the_truth(
    world: str, request: pytest.FixtureRequest
) -> None:
    # given a world's rates run, its policy evaluated off-policy on held-out exposures
    found: OpeTruth = request.getfixturevalue(f"{world}_ope")
    _report(world, found)

    # then the DR estimate of its net margin per exposure is within 5 % of the truth, and
    # its 95 % interval covers the truth
    assert abs(found.error("dr")) <= 0.05
    assert found.estimates["dr"].covers(found.truth)


# ------------------------------------------------------------------ the policy's true value

# What the policy must reach, per world: (share of the oracle, gain over the best uniform rate)
BARS = {"default": (0.8, 0.2), "hard": (0.6, 0.0)}
GAIN_OPEN = {
    "default": "open (issue 7): +6.5 % over the best uniform rate (5 %) at its spend; the "
    "bar is +20 %. A policy knowing each customer's true segment curve and true baseline "
    "reaches only about +20 % (printed as the segment-informed gain): the rest needs telling "
    "responders from non-responders within a segment, which the features do not show",
    "hard": "open (issue 7): about -10 % against the best uniform rate (5 %) at its spend; "
    "the bar is no worse. The threshold responses are under-estimated (rate effects shrunk "
    "towards none), so the budget goes to the wrong customers",
}


def _truth_report(world: str, found: TruthComparison) -> None:
    print(
        f"\n{world} world: {found.share_of_oracle:.1%} of the oracle, "
        f"{found.gain_over_best_uniform:+.1%} against the best uniform rate "
        f"({found.best_uniform:.0%}); segment-informed gain "
        f"{found.segment_informed_gain:+.1%}; logging {found.logging:,.0f}, "
        f"ours {found.ours:,.0f}, oracle {found.oracle:,.0f}"
    )


@pytest.mark.xdist_group("simulated_worlds")
@pytest.mark.parametrize("world", ["default", "hard"])
def test_the_policy_reaches_its_share_of_the_oracle(
    world: str, request: pytest.FixtureRequest
) -> None:
    # given a world's rates learnt and priced without a budget
    settings, result = request.getfixturevalue(f"{world}_rates")

    # when the policy is scored on the truth
    found = against_truth(settings, result)
    _truth_report(world, found)

    # then its true incremental value is at least the bar's share of the oracle's at its spend
    assert found.share_of_oracle >= BARS[world][0]


@pytest.mark.xdist_group("simulated_worlds")
@pytest.mark.parametrize(
    "world",
    [
        pytest.param(
            w, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=GAIN_OPEN[w])
        )
        for w in ("default", "hard")
    ],
)
def test_the_policy_beats_the_best_uniform_rate_at_its_spend(
    world: str, request: pytest.FixtureRequest
) -> None:
    # given a world's rates learnt and priced without a budget
    settings, result = request.getfixturevalue(f"{world}_rates")

    # when the policy is re-solved at the best uniform rate's spend and scored on the truth
    found = against_truth(settings, result)
    _truth_report(world, found)

    # then it earns the bar's gain over that uniform rate
    assert found.gain_over_best_uniform >= BARS[world][1]
