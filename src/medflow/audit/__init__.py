"""The audit trail's records and their hash chain: what a record holds, how it is hashed, how a chain is checked.

Storage is not here (medflow.tracking.audit keeps the records in MLflow); this package knows nothing of MLflow, so
the chain can be checked from an export as well as from the registry.

A record is a flat JSON object (`Record.body`); its `hash` is sha256 over the canonical JSON of the body (keys
sorted, no spaces, UTF-8), and the body holds `prev`, the hash of the record before it in the same chain (GENESIS for
the first). Editing any field of a record changes its hash; removing a record leaves its successor's `prev`
pointing at nothing; two writers appending at once leave two records with one `seq` (a fork). `verify` names the
first record where any of these happened.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

GENESIS = "0" * 64
# A longer value (a card, a description) is recorded as its digest: records stay far below MLflow's 8000-character
# run tag limit, and free text that could hold anything stays out of a log that is exported.
MAX_VALUE = 200
FIELDS = ("seq", "chain", "at", "who", "action", "resource", "before", "after", "run_id", "flow_run_id", "prev")


class ChainBroken(ValueError):
    """str() names the first broken record and how it broke; `medflow_fix` what to do."""

    def __init__(self, what: str):
        super().__init__(what)
        self.medflow_fix = (
            "the registry's audit trail was changed outside medflow: compare with the last export "
            "(medflow audit export) and investigate who had write access"
        )


def canonical(body: Mapping) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(body: Mapping) -> str:
    return hashlib.sha256(canonical(body)).hexdigest()


def bounded(value):
    """value as recorded: strings over MAX_VALUE characters (and in containers) become 'sha256:<hex>'."""
    if isinstance(value, str) and len(value) > MAX_VALUE:
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    if isinstance(value, Mapping):
        return {str(k): bounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [bounded(v) for v in value]
    return value


@dataclass(frozen=True)
class Record:
    body: dict
    hash: str
    ref: str = ""  # where the store keeps it (an MLflow run id): named in errors, not hashed

    @property
    def seq(self) -> int:
        return int(self.body["seq"])

    def line(self) -> dict:
        """One JSON line of an export: the body and its hash."""
        return {**self.body, "hash": self.hash}


def make(
    *,
    seq: int,
    prev: str,
    chain: str,
    at: str,
    who: str,
    action: str,
    resource: str,
    before=None,
    after=None,
    run_id: str | None = None,
    flow_run_id: str | None = None,
) -> Record:
    body = {
        "seq": seq,
        "chain": chain,
        "at": at,
        "who": who,
        "action": action,
        "resource": resource,
        "before": bounded(before),
        "after": bounded(after),
        "run_id": run_id,
        "flow_run_id": flow_run_id,
        "prev": prev,
    }
    return Record(body, digest(body))


def parse(text: str, stored_hash: str, ref: str = "") -> Record:
    return Record(json.loads(text), stored_hash, ref)


def _name(r: Record) -> str:
    return f"record {r.body.get('seq', '?')} of chain {r.body.get('chain', '?')}" + (f" ({r.ref})" if r.ref else "")


def verify(chain: str, records: Iterable[Record], head: tuple[int, str] | None = None) -> int:
    """Checks one chain (any order); returns its length. Raises ChainBroken naming the first broken record.

    head: (seq, hash) of the last record as the store noted it apart from the records, so that removing the newest
    records is seen too."""
    ordered = sorted(records, key=lambda r: (int(r.body.get("seq", 0)), r.ref))
    prev, expected = GENESIS, 1
    for i, r in enumerate(ordered):
        if r.body.get("chain") != chain:
            raise ChainBroken(f"{_name(r)} was moved into chain {chain}")
        if set(r.body) != set(FIELDS) or digest(r.body) != r.hash:
            raise ChainBroken(f"{_name(r)} was edited: its content no longer matches its hash")
        if r.seq < expected:
            other = ordered[i - 1]
            raise ChainBroken(
                f"{_name(r)} forks the chain: {_name(other)} has the same number (two writers appended at once)"
            )
        if r.seq > expected:
            raise ChainBroken(f"{_name(r)}: record {expected} before it was removed")
        if r.body["prev"] != prev:
            raise ChainBroken(f"{_name(r)} does not follow record {expected - 1}: the record before it was replaced")
        prev, expected = r.hash, expected + 1
    if head is not None:
        seq, hash_ = head
        if seq >= expected:
            raise ChainBroken(
                f"record {expected} of chain {chain} and later were removed (its head names record {seq})"
            )
        if seq > 0 and ordered[seq - 1].hash != hash_:
            raise ChainBroken(f"{_name(ordered[seq - 1])} was replaced: the head names another hash")
    return len(ordered)
