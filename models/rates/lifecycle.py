"""The rate policy in the model lifecycle: pyfunc wrapper, gate, registration.

The registered model `cashback-rates` is the policy, not one learner: the fitted response
(`RateResponse`) and what turns its values into a rate (the grid, min and max rates, segment
caps and the budget's Lagrange multiplier). Its pyfunc takes customer feature rows (the
response's features, `fraud_share`, and `segment` when caps apply) and returns the chosen
rate with each grid rate's value, cost and net margin (`value_R`, `cost_R`, `net_R` with R
the rate as a number).

Gate (`cashback models promote rates`), on the challenger run's evaluation set (the held-out
exposures with their logged rate, propensity and net margin): primary `dr_value`, the doubly
robust value of the policy per exposure (net margin, the currency); guardrail `snips_value`,
the self-normalized IPS value, which needs no reward model and so guards against a reward
model that flatters its own policy.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib as mpl

mpl.use("Agg")  # files only

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import pandas as pd
import polars as pl
from matplotlib.figure import Figure
from mlflow.pyfunc.model import PythonModel, PythonModelContext

from cashback.settings import Settings
from models.customers.lifecycle import model_input
from models.evaluation import Gate, MetricSpec
from models.rates.dataset import matrix
from models.rates.ope import LoggedData, evaluate_policy
from models.rates.policy import allowed_rates, rates_at
from models.rates.response import RateResponse, RateValues

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

SHORT = "rates"
RESPONSE_FILE, POLICY_FILE = "response.pkl", "policy.json"
EVALUATION_COLUMNS = ("rate", "propensity", "net_margin", "cluster")
GATE_REPLICATES = 20  # the gate reads point estimates; a few replicates keep it quick


@dataclass(frozen=True)
class PolicyParams:
    """What turns rate values into a rate: grid limits, caps and the budget's multiplier."""

    min_rate: float
    max_rate: float
    segment_caps: dict[str, float]
    multiplier: float


def rate_column(kind: str, rate: float) -> str:
    """The output column of one grid rate, e.g. `value_0.05`."""
    return f"{kind}_{rate:g}"


def save_policy(response: RateResponse, params: PolicyParams, directory: Path) -> dict[str, Path]:
    """Write the response (pickled: several boosters and their settings) and the parameters.

    Returns:
        Their paths by artifact name.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RESPONSE_FILE).write_bytes(pickle.dumps(response))
    (directory / POLICY_FILE).write_text(json.dumps(asdict(params), indent=2))
    return {"response": directory / RESPONSE_FILE, "policy": directory / POLICY_FILE}


def load_policy(directory: Path) -> tuple[RateResponse, PolicyParams]:
    """Read what `save_policy` wrote."""
    # our own artifact, written by save_policy into the model's registered files
    response = pickle.loads((directory / RESPONSE_FILE).read_bytes())  # noqa: S301
    params = PolicyParams(**json.loads((directory / POLICY_FILE).read_text()))
    return response, params


def price_matrix(
    response: RateResponse,
    params: PolicyParams,
    x: npt.NDArray[np.float64],
    share: npt.NDArray[np.float64],
    segments: npt.NDArray[np.str_] | None,
) -> tuple[npt.NDArray[np.float64], RateValues]:
    """Each row's rate, and every grid rate's values, from the encoded model inputs.

    Args:
        response: the fitted response.
        params: the policy's parameters.
        x: the response's features, encoded (`models.rates.dataset.matrix`), one row each.
        share: each row's fraud share.
        segments: each row's segment, when segment caps apply.
    """
    grid = np.asarray(response.grid)
    values = response.values(x, share)
    allowed = allowed_rates(
        grid,
        segments,
        min_rate=params.min_rate,
        max_rate=params.max_rate,
        segment_caps=params.segment_caps,
    )
    return grid[rates_at(values.value, values.cost, allowed, params.multiplier)], values


def price(response: RateResponse, params: PolicyParams, frame: pl.DataFrame) -> pd.DataFrame:
    """Each row's rate, and every grid rate's value, cost and net margin.

    Args:
        response: the fitted response.
        params: the policy's parameters.
        frame: rows with the response's features and `fraud_share` (0 when absent), and
            `segment` when segment caps apply.
    """
    share = (
        frame["fraud_share"].fill_null(0.0).to_numpy()
        if "fraud_share" in frame.columns
        else np.zeros(frame.height)
    )
    segments = frame["segment"].cast(pl.String).to_numpy() if "segment" in frame.columns else None
    rate, values = price_matrix(response, params, matrix(frame, response.features), share, segments)
    out = {"rate": rate}
    for k, r in enumerate(response.grid):
        out[rate_column("value", r)] = values.value[:, k]
        out[rate_column("cost", r)] = values.cost[:, k]
        out[rate_column("net", r)] = values.net[:, k]
    return pd.DataFrame(out)


class RatesPyfunc(PythonModel):
    """Pyfunc wrapper of the rate policy: customer features in, rate and values out."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load the response and the policy parameters from the artifact directory."""
        self._response, self._params = load_policy(Path(context.artifacts["response"]).parent)

    def predict(
        self,
        context: PythonModelContext,  # noqa: ARG002 - pyfunc signature
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,  # noqa: ARG002 - pyfunc signature
    ) -> pd.DataFrame:
        """The chosen rate and each grid rate's value, cost and net margin per row."""
        return price(self._response, self._params, pl.from_pandas(model_input))


class RatesEvaluator:
    """Scores a rates pyfunc model off-policy on held-out logged exposures."""

    @property
    def gate(self) -> Gate:
        """The DR value decides; the SNIPS value guards."""
        return Gate(
            primary=MetricSpec("dr_value", higher_is_better=True),
            guardrails=(MetricSpec("snips_value", higher_is_better=True),),
        )

    def evaluate(self, model: PyFuncModel, evaluation: pl.DataFrame) -> dict[str, float]:
        """The gate's metrics of `model` on `evaluation` (features and EVALUATION_COLUMNS)."""
        schema = model.metadata.get_input_schema()  # type: ignore[no-untyped-call]
        names = schema.input_names()
        predicted: pd.DataFrame = model.predict(model_input(evaluation, names))
        return off_policy_metrics(predicted, evaluation)


def off_policy_metrics(predicted: pd.DataFrame, logged: pl.DataFrame) -> dict[str, float]:
    """IPS, SNIPS and DR values (per exposure) of the predicted rates on logged exposures."""
    columns = [c for c in predicted.columns if c.startswith("net_")]
    grid = np.array([float(c.removeprefix("net_")) for c in columns])
    order = np.argsort(grid)
    grid, q = grid[order], predicted[columns].to_numpy()[:, order]
    data = LoggedData(
        reward=logged["net_margin"].to_numpy(),
        action=np.searchsorted(grid, logged["rate"].to_numpy() - 1e-12).astype(np.int64),
        propensity=logged["propensity"].to_numpy(),
        cluster=logged["cluster"].to_numpy().astype(np.int64),
        q=q,
    )
    target = np.searchsorted(grid, predicted["rate"].to_numpy() - 1e-12).astype(np.int64)
    found = evaluate_policy(data, target, replicates=GATE_REPLICATES)
    return {f"{name}_value": estimate.value for name, estimate in found.items()}


def value_curve_figure(predicted: pd.DataFrame) -> Figure:
    """Mean expected incremental value and cost of each grid rate over the held-out rows."""
    grid = [float(c.removeprefix("value_")) for c in predicted.columns if c.startswith("value_")]
    value = [predicted[rate_column("value", r)].mean() for r in grid]
    cost = [predicted[rate_column("cost", r)].mean() for r in grid]
    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.plot(np.asarray(grid) * 100, value, marker="o", label="incremental margin")
    axes.plot(np.asarray(grid) * 100, cost, marker="s", label="cashback")
    axes.set(
        xlabel="rate for everyone (%)",
        ylabel="per exposure, against the default rate",
        title="Rate response on held-out exposures",
    )
    axes.legend()
    figure.tight_layout()
    return figure


def evaluation_frame(test: pl.DataFrame, features: tuple[str, ...]) -> pl.DataFrame:
    """Held-out exposures as the gate scores them: features, logged facts, a customer index.

    The customer id becomes a dense integer (`cluster`) so intervals stay clustered by
    customer without keeping the id.
    """
    return test.select(
        *features,
        "fraud_share",
        *EVALUATION_COLUMNS[:3],
        pl.col("customer_id").rank("dense").cast(pl.Int64).alias("cluster"),
    )


def register_rates(
    settings: Settings,
    response: RateResponse,
    params: PolicyParams,
    *,
    training: pl.DataFrame,
    evaluation: pl.DataFrame,
    metrics: dict[str, float],
) -> tuple[str, dict[str, float]]:
    """Log the rates run to MLflow and register the policy as `challenger`.

    Args:
        settings: the service settings.
        response: the fitted response.
        params: the policy's parameters (the run's multiplier).
        training: the training exposures (features, rate, propensity, outcomes).
        evaluation: held-out exposures (`evaluation_frame`).
        metrics: every metric of the run; the gate's are added.

    Returns:
        The new model version, and the gate's metrics as measured at registration.
    """
    from models.registry import log_model_run  # noqa: PLC0415 - MLflow is slow to import

    inputs = [*response.features, "fraud_share"]
    predicted = price(response, params, evaluation)
    gate = off_policy_metrics(predicted, evaluation)
    figure = value_curve_figure(predicted)
    try:
        with tempfile.TemporaryDirectory(prefix="cashback-rates-") as tmp:
            info = log_model_run(
                settings,
                SHORT,
                python_model=RatesPyfunc(),
                artifacts=save_policy(response, params, Path(tmp)),
                params={**response.params, **asdict(params), "grid": list(response.grid)},
                metrics={**metrics, **gate},
                evaluation=evaluation,
                training_data=training,
                input_example=model_input(evaluation.head(5), inputs),
                plots={"value_curve": figure},
            )
    finally:
        plt.close(figure)
    return str(info.version), gate
