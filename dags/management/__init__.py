"""The data platform team's management jobs: one-off production commands run through Dagster for its config,
logs, retries and history (data deletion requests in `deletion/`, ClickHouse backups in `backups/`). This
package sits above the domains: it may use their library modules (never their assets or locations), so that it
recomputes and rewrites through the same code paths they do."""
