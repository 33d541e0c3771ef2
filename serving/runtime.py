"""What the API serves with: the champions, the online store, the claim log, the offer book.

The fraud and rates champions; the online store (the fraud service, and the customer services
for offers); the claim log; the offer book (catalog, rate card, fraud shares).

Each is loaded when the app starts. One that cannot be loaded (no champion yet, a store not
materialized, Redis down) is recorded with the reason: the endpoints that need it answer
with their safe fallback, `/readyz` says what is missing, and it is tried again (at most
every `retry_load_seconds`, when `/readyz` is asked). A champion promoted while the app runs
is swapped in by `serving.champions`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cashback.settings import Settings
from features.online import OnlineReader
from models.fraud.scorer import FraudScorer
from models.rates.lifecycle import PolicyParams
from models.rates.response import RateResponse
from serving.claim_log import SharedClaimLog, open_claim_log
from serving.offer_book import OfferBook, load_offer_book

logger = logging.getLogger(__name__)

FRAUD_SERVICE = "fraud_v1"
RATES_SERVICE = "rates_v1"
CUSTOMERS_SERVICE = "customers_v1"
FRAUD_MODEL = "fraud_model"
RATES_MODEL = "rates_model"
ONLINE_STORE = "online_store"
CUSTOMER_STORE = "customer_store"
CLAIM_LOG = "claim_log"
OFFER_BOOK = "offer_book"


@dataclass(frozen=True)
class LoadedFraud:
    """The fraud champion, ready to score.

    Attributes:
        scorer: the model, its thresholds and the configured rules.
        version: its registered version.
    """

    scorer: FraudScorer
    version: str


def load_fraud(settings: Settings, version: int | None = None) -> LoadedFraud:
    """The fraud champion, or one version, with the configured rules (native files, not pyfunc).

    Args:
        settings: the service settings.
        version: the registered version to load (default: the champion).

    Raises:
        CashbackError: there is no champion or no such version (the message says which).
    """
    from models.fraud.lifecycle import SHORT, champion_scorer  # noqa: PLC0415 - MLflow: slow
    from models.registry import version_artifacts  # noqa: PLC0415
    from pipelines.train_fraud import configured_rules  # noqa: PLC0415

    rules = configured_rules(settings)
    if version is None:
        scorer, champion = champion_scorer(settings, rules)
        return LoadedFraud(scorer, champion)
    directory = version_artifacts(settings, SHORT, version)
    return LoadedFraud(FraudScorer.from_directory(directory, rules), str(version))


@dataclass(frozen=True)
class LoadedRates:
    """The rates champion: the fitted response and the policy's parameters.

    Attributes:
        response: the response of margin, paid spend and spend to the rate.
        params: the grid limits, segment caps and the budget's multiplier.
        version: its registered version.
    """

    response: RateResponse
    params: PolicyParams
    version: str


@dataclass
class CustomerReaders:
    """Online readers of a customer: the rates features, and the model outputs if stored.

    Attributes:
        rates: the rates_v1 service (behaviour, cashback, lifecycle views).
        scores: the customers_v1 service (lifecycle, segment, churn, CLV) when
            `cashback customers score` has run and been materialized, else None.
    """

    rates: OnlineReader
    scores: OnlineReader | None

    def close(self) -> None:
        """Close both readers' connections."""
        self.rates.close()
        if self.scores is not None:
            self.scores.close()


def load_rates(settings: Settings, version: int | None = None) -> LoadedRates:
    """The rates champion, or one version, loaded from its native files.

    Args:
        settings: the service settings.
        version: the registered version to load (default: the champion).

    Raises:
        CashbackError: there is no champion or no such version (the message says which).
    """
    from models.rates.lifecycle import SHORT, load_policy  # noqa: PLC0415
    from models.registry import (  # noqa: PLC0415
        champion_artifacts,
        champion_version,
        version_artifacts,
    )

    if version is None:
        response, params = load_policy(champion_artifacts(settings, SHORT))
        return LoadedRates(response, params, str(champion_version(settings, SHORT)))
    response, params = load_policy(version_artifacts(settings, SHORT, version))
    return LoadedRates(response, params, str(version))


def open_customer_readers(settings: Settings) -> CustomerReaders:
    """Readers of the customer services (the scores one only when it is stored).

    Raises:
        CashbackError: no Feast registry, or an empty store (the message names the command).
    """
    from features.store import feature_store  # noqa: PLC0415

    store = feature_store(settings)
    rates = OnlineReader(store, RATES_SERVICE)
    try:
        scores: OnlineReader | None = OnlineReader(store, CUSTOMERS_SERVICE)
    # no customer_scores view applied or stored yet: segments fall back to lifecycle stages
    except Exception as error:  # noqa: BLE001
        logger.info("no customer scores online (%s): segments are lifecycle stages", error)
        scores = None
    return CustomerReaders(rates, scores)


def open_online(settings: Settings) -> OnlineReader:
    """A reader of the fraud service's stored views (on-demand features come from requests).

    Raises:
        CashbackError: no Feast registry, or an empty store (the message names the command).
    """
    from features.cold_start import cold_start  # noqa: PLC0415
    from features.store import feature_store  # noqa: PLC0415

    reader = OnlineReader(feature_store(settings), FRAUD_SERVICE, skip_on_demand=True)
    cold_start(settings.features)  # computed once, now rather than on a first request
    return reader


@dataclass
class Runtime:
    """The loaded components and why the others are missing.

    Args:
        settings: the service settings.
    """

    settings: Settings
    fraud: LoadedFraud | None = None
    online: OnlineReader | None = None
    claim_log: SharedClaimLog | None = None
    rates: LoadedRates | None = None
    customers: CustomerReaders | None = None
    offer_book: OfferBook | None = None
    problems: dict[str, str] = field(default_factory=dict)
    _tried_at: float = -1e18
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self) -> None:
        """Load every missing component; record why one could not be."""
        with self._lock:
            self._tried_at = time.monotonic()
            loaders: dict[str, Callable[[Settings], Any]] = {
                FRAUD_MODEL: load_fraud,
                ONLINE_STORE: open_online,
                CLAIM_LOG: open_claim_log,
                RATES_MODEL: load_rates,
                CUSTOMER_STORE: open_customer_readers,
                OFFER_BOOK: load_offer_book,
            }
            for name, loader in loaders.items():
                if getattr(self, _ATTRIBUTE[name]) is not None:
                    continue
                try:
                    setattr(self, _ATTRIBUTE[name], loader(self.settings))
                # whatever fails (files, MLflow, Feast, Redis), the API starts and says why
                except Exception as error:  # noqa: BLE001
                    self.problems[name] = f"{type(error).__name__}: {error}"
                    logger.warning("serving without %s: %s", name, self.problems[name])
                else:
                    self.problems.pop(name, None)

    def replace_champion(
        self,
        current: LoadedFraud | LoadedRates,
        new: LoadedFraud | LoadedRates,
        offer_book: OfferBook | None = None,
    ) -> bool:
        """Swap in a fully loaded new champion (and its offer book), unless `current` is gone.

        Under the lock of `load`, so that a retry never interleaves with the swap. Each
        component is one attribute assignment: a request keeps the object it started with.

        Args:
            current: the loaded champion that `new` replaces.
            new: the new champion, of the same model.
            offer_book: the offer book to serve with a new rates champion (None: keep it).

        Returns:
            Whether it was swapped (False: `current` was replaced meanwhile).
        """
        name = FRAUD_MODEL if isinstance(new, LoadedFraud) else RATES_MODEL
        with self._lock:
            if getattr(self, _ATTRIBUTE[name]) is not current:
                return False
            if offer_book is not None:
                self.offer_book = offer_book
                self.problems.pop(OFFER_BOOK, None)
            setattr(self, _ATTRIBUTE[name], new)
            return True

    def retry(self) -> None:
        """`load` again if something is missing and the last try is old enough."""
        wait = self.settings.serving.retry_load_seconds
        if self.problems and time.monotonic() - self._tried_at >= wait:
            self.load()

    def describe(self) -> dict[str, str]:
        """What is loaded, in words."""
        out: dict[str, str] = {}
        if self.fraud is not None:
            out[FRAUD_MODEL] = f"cashback-fraud v{self.fraud.version}"
        if self.online is not None:
            out[ONLINE_STORE] = f"{self.online.target.kind} ({FRAUD_SERVICE})"
        if self.claim_log is not None:
            out[CLAIM_LOG] = "open"
        if self.rates is not None:
            out[RATES_MODEL] = f"cashback-rates v{self.rates.version}"
        if self.customers is not None:
            scores = "" if self.customers.scores is not None else " (no customer scores)"
            out[CUSTOMER_STORE] = f"{RATES_SERVICE}{scores}"
        if self.offer_book is not None:
            out[OFFER_BOOK] = f"{len(self.offer_book.offers)} offers; card: " + (
                self.offer_book.card_source
            )
        return out

    def close(self) -> None:
        """Close the store connections and the claim log."""
        if self.online is not None:
            self.online.close()
        if self.claim_log is not None:
            self.claim_log.close()
        if self.customers is not None:
            self.customers.close()


_ATTRIBUTE = {
    FRAUD_MODEL: "fraud",
    ONLINE_STORE: "online",
    CLAIM_LOG: "claim_log",
    RATES_MODEL: "rates",
    CUSTOMER_STORE: "customers",
    OFFER_BOOK: "offer_book",
}
