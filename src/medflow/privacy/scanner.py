"""Pattern-based PHI scanner in front of every MLflow param, tag and artifact write.

Findings name the kind and where it was seen, never the matched text: an error message or log line that
quoted the value would itself be the leak. The patterns need separators or a prefix, so that metric values,
floats, counts, run ids, hashes and ISO timestamps pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = {".md", ".json", ".txt", ".csv", ".tsv", ".yaml", ".yml", ".html", ".htm", ".log"}
# Shorter forbidden values (a "12" patient number) would flag every ordinary number in a metrics file.
MIN_FORBIDDEN_LEN = 4

_B = r"(?<![\w.+-])"  # no digit, letter, dot or sign glued on the left: not part of a longer number or id
_E = r"(?![\w.-]*\w)"  # nor on the right (a trailing full stop still ends the match)
PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    "phone": re.compile(
        _B + r"(?:"
        r"\+\d{1,3}(?:[-. ]\d{2,4}){2,4}"  # +1-555-123-4567, +44 20 7946 0958
        r"|(?:1[-. ]?)?\(\d{3}\) ?\d{3}[-. ]\d{4}"  # (555) 123-4567
        r"|(?:1[-.])?\d{3}([-.])\d{3}\1\d{4}"  # 555-123-4567, 555.123.4567 (one separator kind)
        # Other countries: a country code and 8-15 digits in groups (+49 30 123456, +33 6 12 34 56 78, +4930123456)
        r"|\+(?=(?:[-. ]?\(?\d\)?){8,15}(?![-. ]?\d))\d{1,3}(?:[-. ]?\(?\d{1,6}\)?){1,6}"
        # or a trunk 0 and 9-11 digits, the area code's first no 0 (07700 900123, 0612345678, (02) 9876 5432,
        # 030 123456); dots only as French or British numbers group them: 0.123456789 and 01.02.2020 stay numbers
        r"|(?=\(?0(?:[- )]{0,2}\d){8,10}(?![- )]{0,2}\d))\(?0[1-9]\d{0,3}\)?(?:[- ]?\d{2,4}){1,4}"
        r"|0[1-9](?:\.\d{2}){4}|0[1-9]\d{1,3}\.\d{3,4}\.\d{3,4}"
        r")" + _E
    ),
    # Area 000/666/9xx, group 00 and serial 0000 are never issued.
    "ssn": re.compile(_B + r"(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}" + _E),
    "mrn": re.compile(r"(?<![A-Za-z0-9])(?i:MRN)[-_:#\s]*\d{4,}" + _E),
}


class PhiLeak(ValueError):
    pass


@dataclass(frozen=True)
class Finding:
    kind: str
    location: str

    def __str__(self) -> str:
        return f"{self.kind} at {self.location}"


def _checks(forbidden: Iterable[str]) -> list[tuple[str, re.Pattern[str]]]:
    values = sorted({v for v in map(str.strip, map(str, forbidden)) if len(v) >= MIN_FORBIDDEN_LEN}, key=len)
    if not values:
        return list(PATTERNS.items())
    # One alternation, longest first, so that thousands of known identifiers cost one pass per text.
    alternation = "|".join(re.escape(v) for v in reversed(values))
    return [*PATTERNS.items(), ("identifier", re.compile(rf"(?<!\w)(?:{alternation})(?!\w)"))]


def _scan_text(text: str, where: str, checks: list[tuple[str, re.Pattern[str]]]) -> list[Finding]:
    findings = []
    for kind, pattern in checks:
        for m in pattern.finditer(text):
            line = f":{text.count(chr(10), 0, m.start()) + 1}" if "\n" in text else ""
            findings.append(Finding(kind, where + line))
    return findings


def _scan_path(path: Path, checks: list[tuple[str, re.Pattern[str]]]) -> list[Finding]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [
        finding
        for f in files
        if f.suffix.lower() in TEXT_SUFFIXES
        for finding in _scan_text(f.read_text(errors="replace"), str(f), checks)
    ]


def _scan(obj: object, where: str, checks: list[tuple[str, re.Pattern[str]]]) -> list[Finding]:
    if isinstance(obj, Path):
        return _scan_path(obj, checks)
    if isinstance(obj, Mapping):
        out = []
        for i, (k, v) in enumerate(obj.items()):
            in_key = _scan(k, f"{where}[key {i}]", checks)
            # A key that is itself PHI must not be echoed back as the location of its value.
            out += in_key + _scan(v, f"{where}[key {i}]" if in_key else f"{where}[{k}]", checks)
        return out
    if isinstance(obj, list | tuple | set):
        return [f for i, v in enumerate(obj) for f in _scan(v, f"{where}[{i}]", checks)]
    return [] if obj is None else _scan_text(str(obj), where, checks)


def scan_text(text: str, where: str = "text", forbidden: Iterable[str] = ()) -> list[Finding]:
    return _scan_text(text, where, _checks(forbidden))


def scan_path(path: Path, forbidden: Iterable[str] = ()) -> list[Finding]:
    """A file or a folder (recursively); only text-like files are read, binaries cannot be pattern-matched."""
    return _scan_path(Path(path), _checks(forbidden))


def scan(obj: object, where: str = "value", forbidden: Iterable[str] = ()) -> list[Finding]:
    """Strings, numbers, Paths (files or folders), and mappings/lists of those; keys are scanned too."""
    return _scan(obj, where, _checks(forbidden))


def assert_clean(obj: object, where: str, forbidden: Iterable[str] = ()) -> None:
    findings = scan(obj, where, forbidden)
    if findings:
        shown = "; ".join(str(f) for f in findings[:10])
        more = f" (+{len(findings) - 10} more)" if len(findings) > 10 else ""
        raise PhiLeak(f"possible PHI in {where}, refusing to write it: {shown}{more}")
