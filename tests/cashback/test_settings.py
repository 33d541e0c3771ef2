"""Settings: CASHBACK_* env vars, `.env`, and the IP pepper (never missing in prod)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from cashback.settings import PEPPER_FILE_NAME, Settings, get_settings

PROD_PEPPER = "a-prod-pepper-of-32-characters!!"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No CASHBACK_* variable from outside, and a working directory without a `.env`."""
    for name in list(os.environ):
        if name.upper().startswith("CASHBACK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_given_no_configuration_then_the_defaults_apply(env: pytest.MonkeyPatch) -> None:
    settings = Settings()

    assert settings.environment == "dev"
    assert settings.data_dir == Path("data")
    assert settings.ip_pepper is None
    assert settings.default_margin_rate == 0.30
    assert settings.simulation.fraud_share == 0.02


def test_given_cashback_env_vars_then_they_override_the_defaults(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("CASHBACK_DATA_DIR", str(tmp_path / "elsewhere"))
    env.setenv("CASHBACK_DEFAULT_MARGIN_RATE", "0.25")
    env.setenv("CASHBACK_EXPOSURE_DAYS", "14")
    env.setenv("CASHBACK_CURRENCY", "USD")

    settings = Settings()

    assert settings.data_dir == tmp_path / "elsewhere"
    assert settings.default_margin_rate == 0.25
    assert settings.exposure_days == 14
    assert settings.currency == "USD"


def test_given_env_vars_without_the_prefix_then_they_are_ignored(env: pytest.MonkeyPatch) -> None:
    env.setenv("CURRENCY", "USD")
    env.setenv("EXPOSURE_DAYS", "14")

    settings = Settings()

    assert settings.currency == "EUR"
    assert settings.exposure_days == 7


def test_given_a_nested_env_var_then_only_that_simulation_field_changes(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("CASHBACK_SIMULATION__FRAUD_SHARE", "0.03")
    env.setenv("CASHBACK_SIMULATION__CUSTOMERS", "500")

    simulation = Settings().simulation

    assert simulation.fraud_share == 0.03
    assert simulation.customers == 500
    assert simulation.days == 365
    assert simulation.seed == 7


def test_given_an_out_of_range_value_then_settings_are_refused_naming_the_field(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("CASHBACK_SIMULATION__FRAUD_SHARE", "0.7")

    with pytest.raises(ValidationError, match=r"simulation\.fraud_share"):
        Settings()


def test_given_a_dotenv_file_in_the_working_directory_then_it_is_read(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("CASHBACK_CURRENCY=GBP\nCASHBACK_SIMULATION__SEED=11\n")

    settings = Settings()

    assert settings.currency == "GBP"
    assert settings.simulation.seed == 11


def test_given_both_a_dotenv_and_an_env_var_then_the_env_var_wins(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("CASHBACK_CURRENCY=GBP\n")
    env.setenv("CASHBACK_CURRENCY", "CHF")

    assert Settings().currency == "CHF"


# ---------------------------------------------------------------- prod secrets


def test_given_prod_without_an_ip_pepper_then_settings_are_refused(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("CASHBACK_ENVIRONMENT", "prod")

    with pytest.raises(ValidationError, match="CASHBACK_IP_PEPPER must be set"):
        Settings()


def test_given_prod_with_a_short_ip_pepper_then_settings_are_refused(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("CASHBACK_ENVIRONMENT", "prod")
    env.setenv("CASHBACK_IP_PEPPER", "short")

    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings()


def test_given_prod_with_an_ip_pepper_then_it_is_the_key_and_no_file_is_written(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("CASHBACK_ENVIRONMENT", "prod")
    env.setenv("CASHBACK_IP_PEPPER", PROD_PEPPER)
    env.setenv("CASHBACK_SERVING__CONSOLE_SECRET", PROD_PEPPER[::-1])
    env.setenv("CASHBACK_DATA_DIR", str(tmp_path / "data"))

    settings = Settings()

    assert settings.ip_pepper_bytes() == PROD_PEPPER.encode()
    assert PROD_PEPPER not in repr(settings)
    assert not (tmp_path / "data").exists()


def test_given_an_unknown_environment_then_settings_are_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv("CASHBACK_ENVIRONMENT", "staging")

    with pytest.raises(ValidationError, match="environment"):
        Settings()


# ---------------------------------------------------------------- dev pepper


def test_given_dev_without_a_pepper_then_a_private_random_one_is_created_once_and_reused(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env.setenv("CASHBACK_DATA_DIR", str(data_dir))
    pepper_file = data_dir / PEPPER_FILE_NAME

    first = Settings().ip_pepper_bytes()
    created = pepper_file.stat()
    again = Settings().ip_pepper_bytes()

    assert len(first) == 64  # 32 random bytes, hex
    assert stat.S_IMODE(created.st_mode) == 0o600
    assert again == first
    assert pepper_file.stat().st_ino == created.st_ino  # reused, not rewritten
    assert pepper_file.stat().st_mtime_ns == created.st_mtime_ns
    assert sorted(p.name for p in data_dir.iterdir()) == [PEPPER_FILE_NAME]  # no temp file


def test_given_two_dev_data_dirs_then_each_gets_its_own_pepper(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    peppers = []
    for name in ("a", "b"):
        env.setenv("CASHBACK_DATA_DIR", str(tmp_path / name))
        peppers.append(Settings().ip_pepper_bytes())

    assert peppers[0] != peppers[1]


def test_given_get_settings_then_it_reads_once_until_the_cache_is_cleared(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("CASHBACK_CURRENCY", "USD")
    first = get_settings()
    env.setenv("CASHBACK_CURRENCY", "GBP")

    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().currency == "GBP"
