"""Operations across every code location: failure alerts to the owning team, and run health in ClickHouse.

Both watch all code locations of the deployment, so they live once, in the `shared` location.
"""
