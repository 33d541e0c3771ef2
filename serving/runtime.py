"""What the API serves with: the fraud champion, the online store, the claim log.

Each is loaded when the app starts. One that cannot be loaded (no champion yet, a store not
materialized, Redis down) is recorded with the reason: the endpoints that need it answer
with their safe fallback, `/readyz` says what is missing, and it is tried again (at most
every `retry_load_seconds`, when `/readyz` is asked).
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
from serving.claim_log import SharedClaimLog, open_claim_log

logger = logging.getLogger(__name__)

FRAUD_SERVICE = "fraud_v1"
FRAUD_MODEL = "fraud_model"
ONLINE_STORE = "online_store"
CLAIM_LOG = "claim_log"


@dataclass(frozen=True)
class LoadedFraud:
    """The fraud champion, ready to score.

    Attributes:
        scorer: the model, its thresholds and the configured rules.
        version: its registered version.
    """

    scorer: FraudScorer
    version: str


def load_fraud(settings: Settings) -> LoadedFraud:
    """The fraud champion with the configured rules (its native files, not pyfunc).

    Raises:
        CashbackError: there is no champion (the message says how to make one).
    """
    from models.fraud.lifecycle import champion_scorer  # noqa: PLC0415 - MLflow: slow import
    from pipelines.train_fraud import configured_rules  # noqa: PLC0415

    scorer, version = champion_scorer(settings, configured_rules(settings))
    return LoadedFraud(scorer, version)


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
        return out

    def close(self) -> None:
        """Close the store connections and the claim log."""
        if self.online is not None:
            self.online.close()
        if self.claim_log is not None:
            self.claim_log.close()


_ATTRIBUTE = {FRAUD_MODEL: "fraud", ONLINE_STORE: "online", CLAIM_LOG: "claim_log"}
