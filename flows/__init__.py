"""Prefect flows, importable as the package `flows` from the project root (deployments need a real module)."""
