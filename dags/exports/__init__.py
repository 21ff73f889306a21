"""Parquet exports of events and web analytics pre-aggregates to a folder, S3 or GCS, exactly once per day.

Users own their data: these assets copy each day to their own bucket, on a schedule and in backfills.
The layout is a contract that outside readers rely on (they glob `*/date=*/*.parquet`)::

    <destination>/<dataset>/date=YYYY-MM-DD/data.parquet     one zstd Parquet file per day
    <destination>/<dataset>/date=YYYY-MM-DD/_manifest.json   rows, bytes, checksum, schema, run id

Every day is written in one atomic step, so a reader sees each day exactly once, old or new, never a
partial file or a second copy: a local file is written under a hidden temporary name (outside the glob)
and renamed; an S3 object appears when its (multipart) upload completes; a GCS object when its upload
finishes. The manifest is written after the data file. A rerun first cleans up what a crashed run left
(incomplete multipart uploads, temporary files).

Two ways to move the data, chosen per destination (`ExportDestination.write_method`):

- `stream` (any destination): ClickHouse streams Arrow record batches into a Parquet writer, row group
  by row group (memory is bounded by the row group, not the day), then the file is published.
- `clickhouse` (S3 only): ClickHouse writes the Parquet file straight to the bucket with the `s3()`
  table function; no data passes through Python. The server must be able to reach the bucket.

UUID columns are exported as their canonical 36-character strings: every Parquet reader (pyarrow,
pandas, Spark, DuckDB, BigQuery, Snowflake) reads those as is, with no byte-order or extension-type
question, and both ways of writing give the same schema.

Batch exports are a team's own exports, declared in `BATCH_EXPORTS_FILE`: one team's rows, selected events
and columns, every hour or day, to a folder, a bucket or a Postgres table (one transaction per interval:
delete the interval's rows, then `COPY`). They run on the same machinery.

Modules: `datasets` (what is read: columns declared once, intervals, filters), `parquet` and `manifest`
(what is written), `destinations/` (one module per kind of destination: local, s3, gcs, postgres),
`resource` (the configured destination), `publish` (one interval, exactly once), `runs` (one run's
intervals), `assets` (the deployment's exports: assets, jobs, schedules), `declarations` (the batch
exports file, validated) and `batch_assets` (an asset, job and schedule per batch export).
"""
