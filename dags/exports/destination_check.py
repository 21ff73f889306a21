"""The "check destination" job of a batch export: proves that its destination is reachable and writable with
the export's own credentials, and moves no data.

- **Folder**: writes and removes a small hidden probe file in it (or, when the folder does not exist yet, in
  the nearest existing folder above it, where the export will create it).
- **S3, GCS**: lists the prefix, then puts, lists and deletes a probe object
  `<prefix>/_dagster_destination_check/<uuid>`.
- **Postgres**: connects, and checks `INSERT` and `DELETE` on the table (`has_table_privilege`) or, when
  it does not exist yet, `CREATE` in its schema; never writes a row.

A refusal fails the run at once, saying what to fix (the bucket, the variables the credentials come from, the
privilege); only a destination that does not answer is retried.
"""

import uuid
from typing import Any

from dagster import Failure, JobDefinition, OpExecutionContext, Output, job, op

from dags.common import EXTERNAL_API_RETRY_POLICY
from dags.exports.declarations import BatchExport
from dags.exports.destinations.base import Destination, DestinationAccessError, DestinationUnreachableError
from dags.exports.destinations.local import LocalFolder
from dags.exports.destinations.postgres import PostgresTable
from dags.exports.resource import ExportDestination, parse_destination_url

PROBE_FOLDER = "_dagster_destination_check"
PROBE_CONTENT = b'{"written_by": "the batch export destination check; safe to delete"}\n'
# Codes a bucket answers when it does not exist, or when the credentials themselves are wrong.
MISSING_BUCKET_CODES = frozenset({"NoSuchBucket", "404"})
REFUSED_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "401"}
)
CREDENTIAL_VARIABLES = {
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
    "gs": ("GOOGLE_APPLICATION_CREDENTIALS",),
}


def check_job_name(name: str) -> str:
    return f"batch_export_{name}_check_destination"


def probe_folder(folder: LocalFolder) -> dict[str, Any]:
    """Write and remove a hidden probe file where the export writes (the folder, or the nearest existing
    folder above it when the export is still to create it)."""
    existing = folder.root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise DestinationAccessError(f"{existing} is a file, so the export cannot create the folder {folder.root}")
    probe = existing / f".{PROBE_FOLDER}-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(PROBE_CONTENT)
        probe.unlink()
    except OSError as error:
        probe.unlink(missing_ok=True)
        raise DestinationAccessError(
            f"This process cannot write in {existing} ({error.strerror}): give the user running Dagster write "
            "access to it, or choose another folder"
        ) from None
    if existing == folder.root:
        return {"folder": "exists", "checked": f"wrote and removed a probe file in {existing}"}
    return {
        "folder": f"does not exist yet; the export creates it under {existing}",
        "checked": f"wrote and removed a probe file in {existing}",
    }


def probe_bucket(bucket: Destination) -> dict[str, Any]:
    """List the prefix (as a run does first), then put, list and delete one probe object under it. Listing
    first matters: some S3 servers (SeaweedFS) create a missing bucket on a write by an admin."""
    bucket.check_access()
    path = f"{PROBE_FOLDER}/{uuid.uuid4().hex}"
    bucket.write_small_file(path, PROBE_CONTENT)
    try:
        if not bucket.exists(path):
            raise DestinationAccessError(f"The probe {bucket.url_of(path)} was written but cannot be listed")
    finally:
        try:
            bucket.delete(path)
        except DestinationAccessError as error:
            raise DestinationAccessError(
                f"The probe {bucket.url_of(path)} was written but cannot be deleted: remove it by hand. {error}",
                code=error.code,
            ) from None
    return {"checked": "put, listed and deleted a probe object", "probe": bucket.url_of(path)}


def what_to_fix(error: DestinationAccessError, export: BatchExport, scheme: str, location: str) -> str:
    """The first sentence of a refusal that needs one (the error alone may not say what to change), else ''."""
    if error.code in MISSING_BUCKET_CODES:
        return f"The bucket {location!r} does not exist: create it, or correct the destination in the file"
    if error.code in REFUSED_CREDENTIAL_CODES:
        named = [
            f"{name} (in {export.credentials_env[name]})"
            for name in CREDENTIAL_VARIABLES.get(scheme, ())
            if name in export.credentials_env
        ]
        source = ", ".join(named) if named else "the process's own credentials (credentials_env names none)"
        return f"The destination refused the credentials: check {source}"
    return ""


def check_destination(export: BatchExport, destination: ExportDestination) -> dict[str, Any]:
    """What was checked, as metadata; a refusal raises `DestinationAccessError`."""
    opened = destination.open()
    if isinstance(opened, PostgresTable):
        return {"checked": f"connected; {opened.check_access()}", "rows_written": 0}
    if isinstance(opened, LocalFolder):
        return probe_folder(opened)
    return probe_bucket(opened)


def build_destination_check_job(
    export: BatchExport, destination: ExportDestination, shown_destination: str, tags: dict[str, str]
) -> JobDefinition:
    """`batch_export_<name>_check_destination`: one op that proves the export's destination takes writes."""
    scheme, location, _ = parse_destination_url(destination.url)
    shown: dict[str, Any] = {
        "destination": shown_destination,
        "credentials_env": dict(export.credentials_env),  # variable names only
    }

    @op(
        name=f"batch_export_{export.name}_check",
        description=f"Prove that {shown_destination} is reachable and writable for {export.name}; moves no data.",
        retry_policy=EXTERNAL_API_RETRY_POLICY,  # only a destination that does not answer is retried
    )
    def check(context: OpExecutionContext) -> Output[None]:
        context.log.info(f"Checking {shown_destination} for the batch export {export.name}")
        try:
            checked = check_destination(export, destination)
        except (ValueError, DestinationAccessError) as error:
            fix = what_to_fix(error, export, scheme, location) if isinstance(error, DestinationAccessError) else ""
            raise Failure(
                description=f"{export.name}: {fix + '. ' if fix else ''}{error}{destination.credentials_hint()}",
                metadata=shown,
                allow_retries=False,
            ) from None
        except DestinationUnreachableError as error:
            raise Failure(description=f"{export.name}: {error}", metadata=shown) from None  # retried
        context.log.info(f"{shown_destination}: {checked['checked']}")
        return Output(None, metadata={**shown, **checked})

    @job(
        name=check_job_name(export.name),
        description=f"Check that the batch export {export.name}'s destination, {shown_destination}, is reachable "
        "and writable with its credentials. Moves no data: a probe file or object is written and removed "
        "(Postgres: privileges are read, no row is written).",
        tags=tags,
    )
    def check_job() -> None:
        check()

    return check_job
