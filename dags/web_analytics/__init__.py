"""Web analytics pre-aggregates: hourly stats and bounces per team, read by the web analytics dashboards.

`schema` declares the tables and their dimensions once; `sql` computes them from `events`; `refresh`
swaps a window of days in idempotently; `checks` compares them with `events`; `assets` and
`schedules` are what the web analytics location gathers.
"""
