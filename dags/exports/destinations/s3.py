"""An S3 (or S3-compatible) bucket and prefix, through dagster-aws's S3 resource."""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dags.exports.destinations.base import (
    IN_PROGRESS_SUFFIX,
    PARQUET_CONTENT_TYPE,
    Destination,
    DestinationAccessError,
    DestinationUnreachableError,
    clean_staging_folder,
    local_staging_root,
)
from dags.exports.manifest import DATA_FILE
from dags.exports.parquet import ParquetFileInfo, describe_parquet_footer

if TYPE_CHECKING:
    from dagster_aws.s3 import S3Resource

# Codes an object store answers when retrying cannot help: wrong keys, no permission, no such bucket.
S3_ACCESS_ERROR_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "NoSuchBucket",
        "AllAccessDisabled",
        "403",
        "404",
    }
)


class S3Bucket(Destination):
    """An S3 (or S3-compatible) bucket and prefix: each file is one upload, multipart above the part size.

    An object appears only when its upload completes, so a killed run leaves the previous object in place
    and at most an incomplete multipart upload, which the next run for that day aborts.
    """

    supports_clickhouse_writes = True

    def __init__(self, resource: "S3Resource", bucket: str, prefix: str, part_size_bytes: int):
        self.resource = resource
        self.client = resource.get_client()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size_bytes = part_size_bytes
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _call(self, what: str, operation: Callable[[], Any]) -> Any:
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        try:
            return operation()
        except (EndpointConnectionError, ConnectTimeoutError) as error:
            raise DestinationUnreachableError(
                f"Cannot reach S3 to {what} {self.url} at {self.client.meta.endpoint_url} ({error}). Check "
                "AWS_ENDPOINT_URL (the S3 endpoint; unset for AWS itself), AWS_REGION and EXPORT_DESTINATION_URL."
            ) from None
        except (NoCredentialsError, PartialCredentialsError) as error:
            raise DestinationAccessError(
                f"No usable AWS credentials to {what} {self.url}: set AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for the process running Dagster ({error})."
            ) from None
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in S3_ACCESS_ERROR_CODES:
                message = error.response.get("Error", {}).get("Message") or code
                raise DestinationAccessError(
                    f"S3 refused to {what} {self.url} ({code}: {message}). Check AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), AWS_ENDPOINT_URL and AWS_REGION, that the bucket "
                    f"{self.bucket!r} (EXPORT_DESTINATION_URL) exists, and that these credentials may list, write and "
                    "abort uploads in it.",
                    code=code,
                ) from None
            raise

    def check_access(self) -> None:
        try:
            self._call(
                "list",
                lambda: self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(""), MaxKeys=1),
            )
        except DestinationUnreachableError as error:  # before any data moves: a setting to fix, not an outage
            raise DestinationAccessError(str(error)) from None

    def clean_up(self, folder: str) -> list[str]:
        prefix = self.key(folder) + "/"
        aborted = []
        listing = self._call(
            "list incomplete uploads in",
            lambda: self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix),
        )
        for upload in listing.get("Uploads", []):
            self._call(
                "abort an incomplete upload in",
                lambda upload=upload: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                ),
            )
            aborted.append(f"s3://{self.bucket}/{upload['Key']} (upload {upload['UploadId']})")
        return aborted + clean_staging_folder(self._staging_folder(folder))

    def _staging_folder(self, folder: str) -> Path:
        return local_staging_root() / "s3" / self.bucket / self.key(folder)

    def staging_path(self, folder: str, run_id: str) -> Path:
        directory = self._staging_folder(folder)
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f".{DATA_FILE}.{run_id[:8]}{IN_PROGRESS_SUFFIX}"

    def publish(self, staging: Path, folder: str) -> None:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=self.part_size_bytes, multipart_chunksize=self.part_size_bytes, max_concurrency=4
        )
        key = self.key(f"{folder}/{DATA_FILE}")
        self._call(
            "upload to",
            lambda: self.client.upload_file(
                str(staging), self.bucket, key, ExtraArgs={"ContentType": PARQUET_CONTENT_TYPE}, Config=config
            ),
        )

    def write_small_file(self, path: str, content: bytes) -> None:
        self._call(
            "write to",
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=self.key(path), Body=content, ContentType="application/json"
            ),
        )

    def exists(self, path: str) -> bool:
        key = self.key(path)
        listing = self._call("list", lambda: self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1))
        return any(item["Key"] == key for item in listing.get("Contents", []))

    def read_bytes(self, path: str) -> bytes:
        return self._call("read", lambda: self.client.get_object(Bucket=self.bucket, Key=self.key(path)))["Body"].read()

    def delete(self, path: str) -> None:
        self._call("delete from", lambda: self.client.delete_object(Bucket=self.bucket, Key=self.key(path)))

    # -- ClickHouse writing straight to the bucket --

    def clickhouse_credentials(self) -> tuple[str, str, str | None]:
        """The access key, secret and session token the boto3 client signs with, for ClickHouse's s3()."""
        import boto3

        if self.resource.aws_access_key_id and self.resource.aws_secret_access_key:
            return self.resource.aws_access_key_id, self.resource.aws_secret_access_key, self.resource.aws_session_token
        # The same chain the S3 resource's client resolves: environment, profile, instance role.
        credentials = boto3.session.Session(profile_name=self.resource.profile_name).get_credentials()
        if credentials is None:
            raise DestinationAccessError(
                f"write_method=clickhouse needs AWS credentials to hand to ClickHouse for {self.url}: "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)."
            )
        frozen = credentials.get_frozen_credentials()
        return frozen.access_key, frozen.secret_key, frozen.token

    def object_url(self, endpoint_url: str, path: str) -> str:
        """A path-style HTTP URL of an object, as ClickHouse's s3() takes it."""
        return f"{endpoint_url.rstrip('/')}/{self.bucket}/{quote(self.key(path))}"

    def describe_object(self, path: str) -> ParquetFileInfo:
        """Describe the Parquet object at `path` from its footer (two small ranged reads)."""
        key = self.key(path)
        head = self._call("read", lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        size = int(head["ContentLength"])
        tail = self._call("read", lambda: self.client.get_object(Bucket=self.bucket, Key=key, Range="bytes=-8"))
        tail_bytes = tail["Body"].read()
        if len(tail_bytes) != 8 or tail_bytes[4:] != b"PAR1":
            raise ValueError(f"{self.url_of(path)} is not a Parquet file")
        footer_length = int.from_bytes(tail_bytes[:4], "little")
        footer = self._call(
            "read",
            lambda: self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=-{footer_length + 8}"),
        )["Body"].read()
        checksum = {"algorithm": "s3-etag", "value": str(head["ETag"]).strip('"')}
        return describe_parquet_footer(footer, size, checksum)
