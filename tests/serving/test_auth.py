"""API keys: random, shown once, stored hashed; revocation; the `cashback keys` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cashback.cli import app
from cashback.vocab import Role
from serving.auth import KEY_PREFIX, authenticate, create_key, hash_key, list_keys, revoke_key
from serving.db import Database
from serving.tables import ApiKey

pytestmark = pytest.mark.xdist_group("serving")


def test_a_key_is_random_shown_once_and_stored_as_its_hash(database: Database) -> None:
    with database.session() as session:
        first = create_key(session, Role.RISK, "analyst")
        second = create_key(session, Role.RISK)
    assert first.key.startswith(KEY_PREFIX)
    assert len(first.key) > 40
    assert first.key != second.key
    assert second.name == "risk"
    with database.session() as session:
        rows = session.scalars(select(ApiKey)).all()
        stored = {r.key_hash for r in rows}
        assert stored == {hash_key(first.key), hash_key(second.key)}
        assert all(first.key not in str(vars(r)) for r in rows)
        principal = authenticate(session, first.key)
    assert principal is not None
    assert (principal.key_id, principal.name, principal.role) == (first.key_id, "analyst", "risk")


def test_unknown_and_revoked_keys_do_not_authenticate(database: Database) -> None:
    with database.session() as session:
        created = create_key(session, Role.ENGINE)
        assert authenticate(session, created.key[:-1] + "x") is None
        assert authenticate(session, "no-prefix") is None
        revoked = revoke_key(session, created.key_id)
        first = revoked.revoked_at
        assert authenticate(session, created.key) is None
        assert revoke_key(session, created.key_id).revoked_at == first  # kept
        with pytest.raises(Exception, match="no API key with id 999"):
            revoke_key(session, 999)
        assert [k.id for k in list_keys(session)] == [created.key_id]


def test_the_keys_commands_create_list_and_revoke(cli_env: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--role", "engine", "--name", "checkout"])
    assert created.exit_code == 0, created.output
    key = next(w for w in created.output.split() if w.startswith(KEY_PREFIX))
    assert "cannot be shown again" in created.output
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0, listed.output
    assert "checkout" in listed.output
    assert "engine" in listed.output
    assert key not in listed.output
    assert key[: len(KEY_PREFIX) + 8] in listed.output
    revoked = runner.invoke(app, ["keys", "revoke", "1"])
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in revoked.output
    bad_role = runner.invoke(app, ["keys", "create", "--role", "boss"])
    assert bad_role.exit_code != 0
    assert (cli_env / "serving" / "app.db").exists()


def test_db_upgrade_migrates_and_says_the_revision(cli_env: Path) -> None:
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "app database (sqlite) at revision 0004" in result.output
