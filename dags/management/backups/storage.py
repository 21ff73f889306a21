"""Where backups live: the bucket (or folder) of `CLICKHOUSE_BACKUP_URL`, its credentials and its listing.

Dagster lists, reads and deletes backups with boto3 (through dagster-aws `S3Resource`); ClickHouse writes
and reads them itself with its `S3(...)` backup engine. Both use the same endpoint and credentials, which
reach ClickHouse only as bound query parameters, never in the statement's text.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from dags.common import PROJECT_ROOT, NotConfiguredError
from dags.management.settings import (
    BACKUP_URL_VARIABLE,
    MAX_RETENTION_DAYS,
    BackupLocation,
    load_backup_location,
    load_retention_days,
    parse_backup_url,
)

if TYPE_CHECKING:
    from dagster_aws.s3 import S3Resource

# A backup's name sorts by the time it was taken: 2026-11-26T031500Z-full, 2026-11-27T031500Z-incr.
NAME_TIME_FORMAT = "%Y-%m-%dT%H%M%SZ"
NAME_PATTERN = re.compile(r"^(?P<taken>\d{4}-\d{2}-\d{2}T\d{6}Z)-(?P<kind>full|incr)$")
# ClickHouse writes this file last: a backup without it did not finish.
BACKUP_METADATA_FILE = ".backup"

# What S3 answers when retrying cannot help: wrong keys, no permission, no such bucket.
_CREDENTIAL_ERRORS = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "403"}
)
_MISSING_BUCKET_ERRORS = frozenset({"NoSuchBucket", "404", "NotFound"})

# The embedded engine cannot write backups (no backups.allowed_path), so a laptop's way is the local server.
LOCAL_SERVER_BACKUPS = PROJECT_ROOT / ".dagster_home" / "clickhouse-server" / "backups"
WHAT_TO_SET = (
    f"set it to s3://bucket/prefix (with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or on a laptop start the "
    f"local ClickHouse server (README: A local ClickHouse server), point CLICKHOUSE_URL at it and set "
    f"{BACKUP_URL_VARIABLE}=file://{LOCAL_SERVER_BACKUPS}"
)


class BackupStorageError(Exception):
    """The backup location cannot be used; the message names the variable to check."""


def backup_name(taken_at: datetime, kind: str) -> str:
    """The name of a backup taken at `taken_at`: `2026-11-26T031500Z-full` or `...-incr`."""
    return f"{taken_at.astimezone(UTC).strftime(NAME_TIME_FORMAT)}-{'full' if kind == 'full' else 'incr'}"


@dataclass(frozen=True)
class StoredBackup:
    """A backup found in the bucket. `complete`: ClickHouse finished writing it."""

    name: str
    kind: str  # "full" or "incr"
    taken_at: datetime
    complete: bool


@dataclass(frozen=True)
class BackupContents:
    """What a backup's own metadata file says: its base (for an incremental) and the tables it holds."""

    base_name: str | None
    tables: list[tuple[str, str]]  # (database, table)


def parse_backup_name(name: str) -> StoredBackup | None:
    match = NAME_PATTERN.match(name)
    if match is None:
        return None
    taken_at = datetime.strptime(match["taken"], NAME_TIME_FORMAT).replace(tzinfo=UTC)
    return StoredBackup(name, match["kind"], taken_at, complete=False)


def parse_backup_metadata(xml: bytes) -> BackupContents:
    """Read ClickHouse's `.backup` file: `<base_backup>S3('.../name')</base_backup>` and `metadata/db/t.sql`."""
    import xml.etree.ElementTree as ElementTree  # only when a backup is read: not on every code server start

    root = ElementTree.fromstring(xml)
    base = root.findtext("base_backup")
    base_name = None
    if base:
        inside = base[base.index("(") + 1 : base.rindex(")")].split(",")[0].strip().strip("'")
        base_name = inside.rstrip("/").rsplit("/", 1)[-1]
    tables = []
    for name in root.iterfind("contents/file/name"):
        parts = (name.text or "").split("/")
        if len(parts) == 3 and parts[0] == "metadata" and parts[2].endswith(".sql"):
            tables.append((_unescape(parts[1]), _unescape(parts[2].removesuffix(".sql"))))
    return BackupContents(base_name, sorted(tables))


def _unescape(part: str) -> str:
    from urllib.parse import unquote

    return unquote(part)


class BackupStorage(ConfigurableResource):
    """The bucket (or server folder) holding ClickHouse backups, with the credentials to reach it.

    Secrets reach this resource only through `EnvVar` (see `backup_storage_from_env`), so they are never
    in run config, the UI or the event log; ClickHouse gets them as bound parameters.

    Example:
        ```python
        BackupStorage(
            url="s3://our-backups/clickhouse",
            aws_access_key_id=EnvVar("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=EnvVar("AWS_SECRET_ACCESS_KEY"),
        )
        ```
    """

    url: str | None = Field(
        default=None,
        description="s3://bucket/prefix, or file:///folder on the ClickHouse server (CLICKHOUSE_BACKUP_URL).",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RETENTION_DAYS,
        description="Backups older than this many days are deleted; when unset, CLICKHOUSE_BACKUP_RETENTION_DAYS "
        "(30 by default) is read when the retention step runs.",
    )
    endpoint_url: str | None = Field(
        default=None, description="S3 endpoint (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL); AWS itself when unset."
    )
    clickhouse_endpoint_url: str | None = Field(
        default=None, description="The S3 endpoint as the ClickHouse server reaches it, when it differs."
    )
    region_name: str | None = Field(default=None, description="AWS_REGION.")
    aws_access_key_id: str | None = Field(default=None, description="AWS_ACCESS_KEY_ID (through EnvVar).")
    aws_secret_access_key: str | None = Field(default=None, description="AWS_SECRET_ACCESS_KEY (through EnvVar).")
    aws_session_token: str | None = Field(default=None, description="AWS_SESSION_TOKEN (through EnvVar).")

    def retention(self) -> int:
        """The retention in days, read now: a bad `CLICKHOUSE_BACKUP_RETENTION_DAYS` raises naming it."""
        return self.retention_days if self.retention_days is not None else load_retention_days()

    @property
    def location(self) -> BackupLocation:
        if not self.url:
            raise NotConfiguredError(BACKUP_URL_VARIABLE, WHAT_TO_SET)
        return parse_backup_url(self.url)

    def display(self, name: str = "") -> str:
        """The URL of a backup (or of the location), without credentials: safe for logs and metadata."""
        return "/".join(part for part in (self.location.url, name) if part)

    def scrub(self, text: str) -> str:
        """`text` with every secret replaced, for messages that quote what a library said."""
        for secret in (self.aws_secret_access_key, self.aws_session_token):
            if secret:
                text = text.replace(secret, "[HIDDEN]")
        return text

    # -- S3 through boto3 --

    def s3(self) -> S3Resource:
        from dagster_aws.s3 import S3Resource

        return S3Resource(
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            max_attempts=3,
        )

    def _call(self, what: str, operation: Any) -> Any:
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        try:
            return operation()
        except NoCredentialsError:
            raise BackupStorageError(
                f"No AWS credentials to {what} {self.display()}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
            ) from None
        except EndpointConnectionError as error:
            raise BackupStorageError(
                f"Could not reach the S3 endpoint to {what} {self.display()}: check AWS_ENDPOINT_URL "
                f"(or AWS_ENDPOINT_URL_S3) and AWS_REGION ({self.scrub(str(error))})."
            ) from None
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            message = self.scrub(str(error.response.get("Error", {}).get("Message") or code))
            if code in _MISSING_BUCKET_ERRORS:
                raise BackupStorageError(
                    f"The bucket of {self.display()} does not exist ({code}): check {BACKUP_URL_VARIABLE} "
                    "and AWS_ENDPOINT_URL."
                ) from None
            if code in _CREDENTIAL_ERRORS:
                raise BackupStorageError(
                    f"S3 refused to {what} {self.display()} ({code}: {message}): check AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, and that they may list, read, write and delete in that bucket."
                ) from None
            raise BackupStorageError(f"Could not {what} {self.display()}: {code}: {message}") from None

    def check_access(self) -> None:
        """Fail now, before ClickHouse writes anything, when the bucket is missing or the keys are refused."""
        location = self.location
        if location.scheme == "file":
            if not location.prefix.startswith("/"):
                raise BackupStorageError(f"{BACKUP_URL_VARIABLE} must name an absolute folder")
            return
        client = self.s3().get_client()
        self._call("reach the bucket of", lambda: client.head_bucket(Bucket=location.bucket))
        self._call("list", lambda: client.list_objects_v2(Bucket=location.bucket, Prefix=location.key(""), MaxKeys=1))

    def list_backups(self) -> list[StoredBackup]:
        """Every backup under the prefix whose name follows `NAME_PATTERN`, oldest first."""
        location = self.location
        found: dict[str, bool] = {}
        if location.scheme == "file":
            root = Path(location.prefix)
            for path in root.iterdir() if root.is_dir() else []:
                found[path.name] = (path / BACKUP_METADATA_FILE).exists()
        else:
            client = self.s3().get_client()
            prefix = location.key("") + "/" if location.prefix else ""
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix)
            for page in self._call("list", lambda: list(pages)):
                for item in page.get("Contents", []):
                    name, _, rest = item["Key"][len(prefix) :].partition("/")
                    found[name] = found.get(name, False) or rest == BACKUP_METADATA_FILE
        backups = []
        for name, complete in found.items():
            parsed = parse_backup_name(name)
            if parsed is not None:
                backups.append(StoredBackup(parsed.name, parsed.kind, parsed.taken_at, complete))
        return sorted(backups, key=lambda backup: backup.name)

    def contents(self, name: str) -> BackupContents:
        """The base and tables of a finished backup, from its `.backup` file."""
        location = self.location
        if location.scheme == "file":
            return parse_backup_metadata((Path(location.prefix) / name / BACKUP_METADATA_FILE).read_bytes())
        client = self.s3().get_client()
        key = location.key(name, BACKUP_METADATA_FILE)
        body = self._call("read", lambda: client.get_object(Bucket=location.bucket, Key=key)["Body"].read())
        return parse_backup_metadata(body)

    def objects(self, name: str) -> dict[str, int]:
        """The objects (keys or paths) of a backup with their sizes: what it really takes in the bucket."""
        location = self.location
        if location.scheme == "file":
            folder = Path(location.prefix) / name
            return {str(path): path.stat().st_size for path in folder.rglob("*") if path.is_file()}
        client = self.s3().get_client()
        prefix = location.key(name) + "/"
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix)
        listed = self._call("list", lambda: list(pages))
        return {item["Key"]: int(item["Size"]) for page in listed for item in page.get("Contents", [])}

    def delete(self, name: str) -> int:
        """Delete every object of a backup; returns how many."""
        location = self.location
        keys = list(self.objects(name))
        if location.scheme == "file":
            shutil.rmtree(Path(location.prefix) / name, ignore_errors=True)
            return len(keys)
        client = self.s3().get_client()
        for start in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": key} for key in keys[start : start + 1000]], "Quiet": True}
            self._call("delete from", lambda batch=batch: client.delete_objects(Bucket=location.bucket, Delete=batch))
        return len(keys)

    # -- ClickHouse's backup engine --

    def engine(self, name: str, prefix: str = "") -> tuple[str, dict[str, str]]:
        """The `S3(...)` (or `File(...)`) clause for a backup and its bound parameters.

        `prefix` keeps the parameter names of two clauses apart (the backup and its `base_backup`).
        """
        location = self.location
        if location.scheme == "file":
            # The absolute folder: a relative one would be taken under the server's backups.allowed_path.
            return f"File({{{prefix}path:String}})", {f"{prefix}path": f"{location.prefix.rstrip('/')}/{name}/"}
        key_id, secret = self._clickhouse_credentials()
        endpoint = (self.clickhouse_endpoint_url or self.endpoint_url or self._aws_endpoint()).rstrip("/")
        clause = f"S3({{{prefix}url:String}}, {{{prefix}key_id:String}}, {{{prefix}secret:String}})"
        return clause, {
            f"{prefix}url": f"{endpoint}/{location.bucket}/{location.key(name)}",
            f"{prefix}key_id": key_id,
            f"{prefix}secret": secret,
        }

    def _aws_endpoint(self) -> str:
        return f"https://s3.{self.region_name or 'us-east-1'}.amazonaws.com"

    def _clickhouse_credentials(self) -> tuple[str, str]:
        if self.aws_access_key_id and self.aws_secret_access_key:
            return self.aws_access_key_id, self.aws_secret_access_key
        import boto3

        credentials = boto3.session.Session().get_credentials()
        if credentials is None:
            raise BackupStorageError(
                "ClickHouse needs AWS credentials for its S3 backup engine: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY."
            )
        frozen = credentials.get_frozen_credentials()
        return frozen.access_key, frozen.secret_key


def _env_var_or_none(name: str) -> Any:
    """`EnvVar(name)` when the variable is set: its value stays out of run config and the UI."""
    return EnvVar(name) if os.environ.get(name, "").strip() else None


def backup_storage_from_env() -> BackupStorage:
    """The backup storage as `CLICKHOUSE_BACKUP_URL` and `AWS_*` say (the retention is read when it runs)."""
    location = load_backup_location()
    endpoint = "AWS_ENDPOINT_URL_S3" if os.environ.get("AWS_ENDPOINT_URL_S3", "").strip() else "AWS_ENDPOINT_URL"
    return BackupStorage(
        url=location.url if location else None,
        endpoint_url=_env_var_or_none(endpoint),
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
        aws_access_key_id=_env_var_or_none("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_env_var_or_none("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=_env_var_or_none("AWS_SESSION_TOKEN"),
    )
