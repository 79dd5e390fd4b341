"""The salted patient key that replaces the patient id before any row is written."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from medflow.params import Params

# Only for the built-in demos, whose "patients" are public or synthetic: real data must bring its own salt.
DEMO_SALT = "medflow-demo-salt"


class SaltMissing(ValueError):
    pass


def pseudonymise(ids: pd.Series, salt: str) -> pd.Series:
    """Salted SHA-256: stable within a project (same salt), unlinkable to the record number without the salt."""
    return ids.astype(str).str.strip().map(lambda v: hashlib.sha256(f"{salt}\x1f{v}".encode()).hexdigest()[:20])


def resolve_salt(params: Params) -> str | None:
    from medflow.data.sources import DEMOS

    if not params.data.patient_id:
        return None
    salt = os.environ.get(params.clean.salt_env)
    if salt:
        return salt
    if params.data.source in DEMOS or Path(params.data.source).stem in DEMOS:
        return DEMO_SALT
    raise SaltMissing(
        f"environment variable {params.clean.salt_env} is not set: it salts the hash that replaces "
        f"{params.data.patient_id!r}. Set it to a long random secret kept outside the repository, and keep it the "
        f"same across runs so patient keys stay stable (export {params.clean.salt_env}=$(openssl rand -hex 32))."
    )
