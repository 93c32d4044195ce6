"""Which clipline a job command talks to: flags, a profile, the environment, the local stack,
in that order; a key never in a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipline.remote import USAGE, Choice, CliError, config_path, resolve, target

KEY_A, KEY_B, KEY_P = "ck_aaaaaaaaaaaaaaaa_" + "a" * 43, "ck_bbbbbbbbbbbbbbbb_b", "ck_profile_p"


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(
        '[profiles.staging]\nurl = "https://staging.example/"\n'
        f'api_key = "{KEY_P}"\n\n'
        '[profiles.ci]\nurl = "https://ci.example"\napi_key_env = "CI_CLIPLINE_KEY"\n'
    )
    path.chmod(0o600)
    return path


def env(profiles: Path, **more: str) -> dict[str, str]:
    return {"CLIPLINE_CONFIG": str(profiles), **more}


def test_nothing_set_means_the_local_stack(tmp_path: Path) -> None:
    url, key, source = resolve(Choice(env={"HOME": str(tmp_path)}), tmp_path)
    assert (url, key) == (None, None)
    assert source == f"the local stack under {tmp_path}"


def test_the_environment_selects_a_remote(profiles: Path, tmp_path: Path) -> None:
    chosen = Choice(env=env(profiles, CLIPLINE_URL="https://prod.example/", CLIPLINE_API_KEY=KEY_A))
    assert resolve(chosen, tmp_path) == ("https://prod.example", KEY_A, "CLIPLINE_URL")


def test_a_profile_of_the_command_line_beats_the_environment(
    profiles: Path, tmp_path: Path
) -> None:
    chosen = Choice(profile="staging", env=env(profiles, CLIPLINE_URL="https://prod.example",
                                               CLIPLINE_API_KEY=KEY_A))  # fmt: skip
    assert resolve(chosen, tmp_path) == ("https://staging.example", KEY_P, "profile staging")


def test_the_environment_beats_a_profile_of_the_environment(profiles: Path, tmp_path: Path) -> None:
    chosen = Choice(env=env(profiles, CLIPLINE_PROFILE="staging", CLIPLINE_API_KEY=KEY_A))
    assert resolve(chosen, tmp_path) == (
        "https://staging.example", KEY_A, "profile staging (CLIPLINE_PROFILE)"
    )  # fmt: skip


def test_flags_beat_everything(profiles: Path, tmp_path: Path) -> None:
    chosen = Choice(url="http://127.0.0.1:8000", api_key=KEY_B, profile="staging",
                    env=env(profiles, CLIPLINE_URL="https://prod.example"))  # fmt: skip
    assert resolve(chosen, tmp_path) == ("http://127.0.0.1:8000", KEY_B, "--url")


def test_a_profile_may_name_the_variable_holding_its_key(profiles: Path, tmp_path: Path) -> None:
    chosen = Choice(profile="ci", env=env(profiles, CI_CLIPLINE_KEY=KEY_B))
    assert resolve(chosen, tmp_path) == ("https://ci.example", KEY_B, "profile ci")


def test_an_api_key_alone_goes_to_the_local_stack(tmp_path: Path) -> None:
    """As before the profiles: CLIPLINE_API_KEY without a URL is the local stack's key."""
    assert resolve(Choice(env={"CLIPLINE_API_KEY": KEY_A}), tmp_path)[:2] == (None, KEY_A)


def test_an_unknown_profile_is_a_usage_error_naming_the_known_ones(
    profiles: Path, tmp_path: Path
) -> None:
    with pytest.raises(CliError, match=r"no profile 'prod' .* \(profiles: ci, staging\)") as err:
        resolve(Choice(profile="prod", env=env(profiles)), tmp_path)
    assert err.value.code == USAGE


def test_a_key_in_a_file_others_can_read_is_refused_without_quoting_it(
    profiles: Path, tmp_path: Path
) -> None:
    profiles.chmod(0o644)
    with pytest.raises(CliError, match="others may read it: chmod 600") as err:
        resolve(Choice(profile="staging", env=env(profiles)), tmp_path)
    assert err.value.code == USAGE
    assert KEY_P not in err.value.message


def test_a_malformed_profile_file_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text(f'[profiles.x]\nurl = "https://x"\napi_kee = "{KEY_A}"\n')
    with pytest.raises(CliError, match="unknown keys api_kee") as err:
        resolve(Choice(profile="x", env={"CLIPLINE_CONFIG": str(bad)}), tmp_path)
    assert KEY_A not in err.value.message
    bad.write_text("[profiles.x\n")
    with pytest.raises(CliError, match="cannot read profiles"):
        resolve(Choice(profile="x", env={"CLIPLINE_CONFIG": str(bad)}), tmp_path)


def test_a_remote_without_a_key_or_with_a_bad_url_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"no API key for https://x\.example") as err:
        target(Choice(env={"CLIPLINE_URL": "https://x.example"}), tmp_path, "default")
    assert err.value.code == USAGE
    with pytest.raises(CliError, match="is not an http"):
        target(Choice(url="x.example", api_key=KEY_A, env={}), tmp_path, "default")


def test_the_profile_file_is_found_where_xdg_says(tmp_path: Path) -> None:
    assert config_path({"XDG_CONFIG_HOME": "/x"}) == Path("/x/clipline/profiles.toml")
    assert config_path({"HOME": "/h"}) == Path("/h/.config/clipline/profiles.toml")
    assert config_path({"CLIPLINE_CONFIG": "/c.toml", "HOME": "/h"}) == Path("/c.toml")
