"""The data platform team's management jobs on ClickHouse: backups (``backups/``), later data deletion."""
