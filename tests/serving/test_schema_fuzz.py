"""Property-based tests of every API operation, generated from the app's own OpenAPI schema.

Schemathesis reads `/openapi.json` from the app (over ASGI, its lifespan started on the
served world with a SQLite app database), so the routes added later are covered without
editing this file. Each operation gets a bounded number of generated requests, valid ones
and invalid ones (bodies, queries, path parameters), sent with an admin key, and each answer
must:

- not be a server error (5xx);
- have a status code the schema documents for the operation (FastAPI's 400 for a body it
  cannot decode is the one exception: undocumented on every route with a body);
- have a documented content type and conform to the documented schema for its status.

`/metrics` is left out: its body is Prometheus text, not described by a JSON schema, and
it takes no input. Schemathesis's pytest loader (`from_fixture`) does not run under this
pytest, so the operations are walked here, one Hypothesis run per operation and mode; every
failure is collected and reported together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cashback.settings import ServingSettings
from cashback.vocab import Role
from serving.app import create_app
from tests.serving.experiment_world import private_world
from tests.serving.live import api_key
from tests.serving.world import base_settings

pytestmark = pytest.mark.xdist_group("serving")
EXAMPLES = 25  # per operation and mode
SKIPPED = r"^/metrics$"
# FastAPI answers 400 with this detail to a body it cannot decode (not UTF-8 JSON), on every
# route with a body, and the schema does not document it: known, tolerated here, reported
UNPARSABLE_BODY = "There was an error parsing the body"


def documented_status(ctx: Any, response: Any, case: Any) -> bool | None:
    """`status_code_conformance`, except FastAPI's 400 for an undecodable body."""
    if response.status_code == 400 and UNPARSABLE_BODY in response.text:
        return None
    return status_code_conformance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    documented_status,
    content_type_conformance,
    response_schema_conformance,
]


def test_every_operation_answers_as_documented(served_world: Path, tmp_path: Path) -> None:
    # given the app on the served world, an admin key, and its schema as the app serves it
    # a private copy: the generated requests create experiments, which write files
    world = private_world(served_world, tmp_path / "data")
    settings = base_settings(
        world, serving=ServingSettings(directory=tmp_path / "serving", audit_share=0.0)
    )
    headers = {"X-API-Key": api_key(settings, Role.ADMIN, "fuzz")}
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    operations: list[Any] = [
        result.ok() for result in schema.exclude(path_regex=SKIPPED).get_all_operations()
    ]
    assert any(op.path == "/v1/claims/score" for op in operations)

    # when each operation gets generated requests, valid and invalid
    failures: dict[str, str] = {}
    try:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode))
                @hypothesis_settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: Any) -> None:
                    case.call_and_validate(headers=headers, checks=CHECKS)

                try:
                    check()
                except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                    if mode is not GenerationMode.NEGATIVE:
                        raise
                except Exception as error:  # noqa: BLE001 - collected, reported below
                    failures[f"{operation.label} ({mode.value})"] = str(error)[:3000]
    finally:
        shutdown_lifespans()

    # then no answer was a server error or strayed from the documented statuses and schemas
    print(f"\nschema fuzz: {len(operations)} operations: {[op.label for op in operations]}")
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
