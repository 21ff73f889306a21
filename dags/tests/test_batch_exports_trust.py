"""The batch exports file refuses what would leak or wrap: team ids outside Int64 or given as booleans, alias
bombs, secrets in place of variable names; a file that cannot be read is a listed problem, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dags.exports.batch_assets import build_batch_exports
from dags.exports.declarations import BatchExportsFileError


def write_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | bytes) -> Path:
    path = tmp_path / "batch_exports.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    monkeypatch.setenv("BATCH_EXPORTS_FILE", str(path))
    return path


def entry_yaml(team_id: str, start: str = "2024-01-01") -> str:
    return (
        "exports:\n"
        f"  - {{name: wrapped, team_id: {team_id}, dataset: events, destination: 'file:///tmp/wrapped',"
        f" interval: day, start: {start}}}\n"
    )


def refusal(monkeypatch: pytest.MonkeyPatch) -> str:
    with pytest.raises(BatchExportsFileError) as raised:
        build_batch_exports()
    return str(raised.value)


@pytest.mark.parametrize("team_id", ["18446744073709551617", "9223372036854775808", "true", "'1'", "0"])
def test_a_team_id_that_is_not_an_int64_team_is_refused_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, team_id: str
) -> None:
    write_file(tmp_path, monkeypatch, entry_yaml(team_id))
    assert "exports[0] (wrapped).team_id:" in refusal(monkeypatch)


def test_the_largest_int64_team_id_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_file(tmp_path, monkeypatch, entry_yaml(str(2**63 - 1)))
    assert len(build_batch_exports().assets) == 1


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    write_file(tmp_path, monkeypatch, "\n".join(lines) + "\nexports: []\n")
    assert "more than 20 aliases" in refusal(monkeypatch)


def test_an_impossible_date_is_a_problem_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_file(tmp_path, monkeypatch, entry_yaml("2", start="2024-02-30"))
    assert str(path) in refusal(monkeypatch)


def test_a_file_that_is_not_utf8_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_file(tmp_path, monkeypatch, entry_yaml("2").encode() + b"# \xff\xfe\n")
    assert "is not UTF-8 text" in refusal(monkeypatch)


def test_a_folder_instead_of_a_file_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_EXPORTS_FILE", str(tmp_path))
    assert "is a folder, not a batch exports file" in refusal(monkeypatch)


def test_a_batch_exports_file_variable_naming_a_missing_file_fails_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_EXPORTS_FILE", str(tmp_path / "missing.yaml"))
    assert "BATCH_EXPORTS_FILE names" in refusal(monkeypatch)


def test_a_secret_given_as_a_variable_name_is_never_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    write_file(
        tmp_path,
        monkeypatch,
        "exports:\n  - {name: s, team_id: 2, dataset: events, destination: 's3://bucket/p', interval: day,"
        f" start: 2024-01-01, credentials_env: {{AWS_SECRET_ACCESS_KEY: '{secret}'}}}}\n",
    )
    message = refusal(monkeypatch)
    assert "must be the name of an environment variable" in message and "wJalr" not in message


def two_entries(first: str, second: str) -> str:
    return "exports:\n" + "".join(
        f"  - {{name: {name}, team_id: {team}, dataset: events, destination: '{url}', interval: day,"
        " start: 2024-01-01}\n"
        for name, team, url in (("first", 2, first), ("second", 3, second))
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("file:///tmp/shared", "file:///tmp/shared"),
        ("file:///tmp/shared", "file:///tmp/shared/inner"),
        ("file:///tmp/a/../shared/inner", "file:///tmp/shared"),
        ("s3://bucket/prefix", "s3://bucket/prefix/team3"),
        ("postgresql://a@db:5432/analytics?table=events", "postgresql://b@db/analytics?table=public.events"),
    ],
)
def test_two_exports_writing_the_same_place_are_refused_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str, second: str
) -> None:
    write_file(tmp_path, monkeypatch, two_entries(first, second))
    assert "exports[1] (second).destination: overlaps the destination of exports[0] (first)" in refusal(monkeypatch)


def test_exports_to_separate_places_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_file(tmp_path, monkeypatch, two_entries("file:///tmp/shared_a", "file:///tmp/shared"))
    assert len(build_batch_exports().assets) == 2


@pytest.mark.parametrize("inside", ["", "/events", "/x/../events"])
def test_an_export_into_the_deployments_export_destination_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: str
) -> None:
    monkeypatch.setenv("EXPORT_DESTINATION_URL", (tmp_path / "deployment").as_uri())
    write_file(
        tmp_path,
        monkeypatch,
        entry_yaml("2").replace("file:///tmp/wrapped", (tmp_path / "deployment").as_uri() + inside),
    )
    assert "exports[0] (wrapped).destination: overlaps EXPORT_DESTINATION_URL" in refusal(monkeypatch)


def test_an_export_containing_the_deployments_export_destination_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPORT_DESTINATION_URL", (tmp_path / "deployment" / "exports").as_uri())
    write_file(tmp_path, monkeypatch, entry_yaml("2").replace("file:///tmp/wrapped", tmp_path.as_uri()))
    assert "overlaps EXPORT_DESTINATION_URL" in refusal(monkeypatch)


def test_a_type_error_in_one_field_hides_no_other_problem_of_that_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_file(
        tmp_path,
        monkeypatch,
        "exports:\n"
        "  - {name: typo, team_id: abc, dataset: events, interval: week, start: 2024-01-01}\n"
        "  - {name: typo2, team_id: abc, dataset: events, destination: 'ftp://host/x', interval: day,"
        " start: 2024-01-01, columns: [uuid, colour], credentials_env: {AWS_KEY: MY_KEY}}\n"
        "  - {name: typo3, team_id: [3], dataset: events, destination: 'file:///tmp/shared', interval: day,"
        " start: 2024-01-01, columns: [uuid, 7]}\n"
        "  - {name: fine, team_id: 4, dataset: events, destination: 'file:///tmp/shared/inner', interval: day,"
        " start: 2024-01-01}\n",
    )
    # The data exports location loads the file as README says, and refuses it listing every problem.
    loaded = subprocess.run(
        [sys.executable, "-c", "import dags.locations.data_exports"],
        env={**os.environ, "BATCH_EXPORTS_FILE": str(path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode != 0
    problems = [line for line in loaded.stderr.splitlines() if line.startswith("- exports[")]
    for expected in [
        "- exports[0] (typo).team_id: Input should be a valid integer",
        "- exports[0] (typo).destination: required",
        "- exports[0] (typo).interval: 'week' is not allowed",
        "- exports[1] (typo2).team_id: Input should be a valid integer",
        "- exports[1] (typo2).destination: Export destination URL 'ftp://host/x' is not supported",
        "- exports[1] (typo2).columns: events has no column(s) colour",
        "- exports[1] (typo2).credentials_env: 'AWS_KEY' is not a credential",
        "- exports[2] (typo3).team_id: Input should be a valid integer",
        "- exports[2] (typo3).columns.1: Input should be a valid string",
        "- exports[3] (fine).destination: overlaps the destination of exports[2] (typo3)",
    ]:
        assert any(problem.startswith(expected) for problem in problems), (expected, loaded.stderr)
    assert len(problems) == 10, problems
