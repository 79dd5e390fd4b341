"""Which columns are patient identifiers: the ones the user declares, and ones whose names say so.

A column named like an identifier (HIPAA Safe Harbor's list: names, record numbers, dates of birth, contact
details, geographic units smaller than a state) is never a feature even if the user forgot to declare it.
"""

from __future__ import annotations

import re

_PHI_NAME = re.compile(
    r"(^|_)(first_?name|last_?name|full_?name|surname|name|patient_?name|mrn|medical_?record|record_?number"
    r"|ssn|social_?security|dob|date_?of_?birth|birth_?date|address|street|city|zip|zip_?code|postcode"
    r"|postal_?code|phone|telephone|mobile|fax|email|e_?mail|ip_?address|url|license|passport"
    r"|account|insurance_?id|member_?id|nhs_?number)($|_)",
    re.IGNORECASE,
)


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_")


def looks_like_identifier(column: str) -> bool:
    return bool(_PHI_NAME.search(_norm(column)))


def undeclared_identifiers(columns: list[str], declared: list[str], allowed: list[str]) -> list[str]:
    """Columns named like identifiers that the user did not declare (and that are not target/patient id)."""
    skip = set(declared) | set(allowed)
    return [c for c in columns if c not in skip and looks_like_identifier(c)]
