"""Data deletion requests: a person's or a whole team's events removed from `events`, the web analytics
pre-aggregates recomputed and the exported Parquet files rewritten, then verified and recorded for auditors.

`requests` is the request table (a contract) and its status transitions; `plan` what a request would
delete; `events` the bounded mutations; `recompute` and `rewrite` go through the web analytics and export
code paths; `verify` proves the result; `jobs` the jobs, schedule and sensors the location gathers.
"""
