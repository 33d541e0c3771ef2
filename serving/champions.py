"""Following promotions while serving: a newly promoted champion is swapped in, no restart.

A daemon thread asks the registry every `serving.champion_check_seconds` which versions hold
the `champion` alias of the fraud and rates models. When one differs from the loaded version,
that version is loaded off the request path (for rates, the offer book is read again with
it: the rate card and fraud shares of the latest `cashback train rates`) and swapped in under
the runtime's lock, one assignment per component (`Runtime.replace_champion`): a request in
flight finishes with the model it started with, and none sees a half-loaded one.

- A load that fails keeps the old champion serving, logs a warning and counts
  `cashback_model_reloads_total{outcome="failure"}`; the next check tries again.
- A removed alias keeps the loaded model (logged once).
- A component not loaded at all (no champion when the app started) is loaded again by
  `Runtime.retry` at a check (at most every `serving.retry_load_seconds`), as by `/readyz`.

With several uvicorn workers each process runs its own thread and follows on its own: for
up to one interval, workers may serve different versions (each decision names its own).
"""

from __future__ import annotations

import logging
import threading

from serving.metrics import Metrics
from serving.offer_book import OfferBook, load_offer_book
from serving.runtime import LoadedFraud, LoadedRates, Runtime, load_fraud, load_rates

logger = logging.getLogger(__name__)

FRAUD = "fraud"
RATES = "rates"
SUCCESS = "success"
FAILURE = "failure"


class ChampionWatcher:
    """A thread that swaps newly promoted fraud and rates champions into the runtime.

    Args:
        runtime: what the API serves with.
        metrics: counts the reloads by model and outcome.
        interval: seconds between two checks of the registry.
    """

    def __init__(self, runtime: Runtime, metrics: Metrics, interval: float) -> None:
        self._runtime = runtime
        self._metrics = metrics
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="champions", daemon=True)
        self._without_alias: set[str] = set()

    def start(self) -> None:
        """Start checking (the first check after one interval: `start` has just loaded)."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (a load under way is finished first, within `timeout`)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def check(self) -> None:
        """Load what is missing (when due), then swap in each champion that changed."""
        self._runtime.retry()
        for short in (FRAUD, RATES):
            self.follow(short)

    def follow(self, short: str) -> str | None:
        """Swap in the model's champion if it is not the loaded version.

        Args:
            short: `fraud` or `rates`.

        Returns:
            `success` or `failure` when a new champion was tried, else None.
        """
        from models.registry import champion_version  # noqa: PLC0415 - MLflow: slow import

        current = self._runtime.fraud if short == FRAUD else self._runtime.rates
        if current is None:
            return None
        try:
            champion = champion_version(self._runtime.settings, short)
        # the registry may be down for a while: keep serving, ask again at the next check
        except Exception as error:  # noqa: BLE001
            logger.warning("could not ask the registry for the %s champion: %s", short, error)
            return None
        if champion is None:
            if short not in self._without_alias:
                logger.warning(
                    "no %s champion alias any more: v%s keeps serving", short, current.version
                )
                self._without_alias.add(short)
            return None
        self._without_alias.discard(short)
        if str(champion) == current.version:
            return None
        return self._swap(short, current, champion)

    def _swap(self, short: str, current: LoadedFraud | LoadedRates, champion: int) -> str | None:
        try:
            new, book = self._load(short, champion)
        # whatever fails (files, MLflow), the loaded champion is still whole: keep it
        except Exception as error:  # noqa: BLE001
            self._metrics.model_reloads.labels(short, FAILURE).inc()
            logger.warning(
                "%s champion v%s could not be loaded (%s: %s): v%s keeps serving",
                short,
                champion,
                type(error).__name__,
                error,
                current.version,
            )
            return FAILURE
        if not self._runtime.replace_champion(current, new, book):
            return None  # replaced meanwhile: the next check compares again
        self._metrics.model_reloads.labels(short, SUCCESS).inc()
        logger.info("%s champion v%s now serves (was v%s)", short, champion, current.version)
        return SUCCESS

    def _load(self, short: str, version: int) -> tuple[LoadedFraud | LoadedRates, OfferBook | None]:
        settings = self._runtime.settings
        if short == FRAUD:
            return load_fraud(settings, version), None
        return load_rates(settings, version), load_offer_book(settings)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.check()
            except Exception:  # the thread must outlive any surprise
                logger.exception("the champion check failed")
