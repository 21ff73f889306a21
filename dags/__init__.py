"""Dagster code locations for product-analytics pipelines on ClickHouse."""
