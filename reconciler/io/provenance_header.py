"""Provenance in a FITS header: keywords and HISTORY lines that say what made a file.

Written into a staged file before it is published (a published file is never rewritten).
The record is the plain data :mod:`reconciler.db.provenance` gathers; ``PROVHASH`` is its
hash, so writing the same record again changes nothing, byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from astropy.io import fits

from reconciler.naming import attempt_path

#: Keywords of the record: (FITS keyword, record field, comment). A 64-digit hash leaves
#: no room for a comment on its card: a HISTORY line says what the hashes are.
KEYWORDS = (
    ("PROVHASH", "provenance_hash", ""),
    ("PKGVER", "package_version", "dsa110-reconciler version"),
    ("GITCOMMT", "git_commit", "dsa110-reconciler git commit"),
    ("SETHASH", "settings_hash", ""),
    ("CASAVER", "casa_version", "casatools version"),
    ("PYUVDVER", "pyuvdata_version", "pyuvdata version"),
    ("CASACVER", "casacore_version", "python-casacore version"),
    ("FINDER", "finder", "source finder installed"),
    ("FINDVER", "finder_version", "source finder version"),
)
#: Keywords summarising the inputs.
SUMMARY = ("NRAWFILE", "RAWBYTES", "NCALTAB", "CALNAME", "CALTRANS")
#: Every HISTORY line of the record starts with this.
HISTORY_PREFIX = "PROV "


def write_provenance(path: Path, record: dict[str, Any], attempt: str) -> bool:
    """Write ``record`` into the primary header of the FITS file ``path``, replacing any
    provenance written before; True when the file changed (False: it holds this record).

    The file is rewritten under a temporary name private to ``attempt`` and renamed over
    ``path``, so a crash leaves the old file or the new one, never half of one.

    Raises
    ------
    OSError
        When the file cannot be read or written.
    """
    with fits.open(path) as hdus:
        header = hdus[0].header
        if header.get("PROVHASH") == record["provenance_hash"]:
            return False
        kept = [card for card in header.cards if not _is_provenance(card)]
        hdus[0].header = fits.Header(kept) + provenance_cards(record)
        partial = attempt_path(path, attempt)
        try:
            hdus.writeto(partial, overwrite=True)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return True


def provenance_cards(record: dict[str, Any]) -> fits.Header:
    """The keywords and HISTORY lines of ``record``; every HISTORY line fits one card."""
    header = fits.Header()
    for keyword, field, comment in KEYWORDS:
        if record.get(field) is not None:
            header[keyword] = (record[field], comment)
    raw = [i for i in record["inputs"] if i["kind"] == "raw_file"]
    calibration = [i for i in record["inputs"] if i["kind"] == "calibration"]
    header["NRAWFILE"] = (len(raw), "raw UVH5 files read (HISTORY PROV raw)")
    header["RAWBYTES"] = (sum(i["size_bytes"] or 0 for i in raw), "bytes of raw files read")
    header["NCALTAB"] = (len(calibration), "calibration tables applied")
    if calibration:
        first = min(calibration, key=lambda i: i["transit_time"] or "")
        header["CALNAME"] = (first["calibrator"], "bandpass calibrator solved on")
        header["CALTRANS"] = (first["transit_time"], "its transit, UTC")
    header["HISTORY"] = f"{HISTORY_PREFIX}made by dsa110-reconciler {record['package_version']}"
    header["HISTORY"] = f"{HISTORY_PREFIX}PROVHASH: SHA-256 of the provenance record (JSON)"
    header["HISTORY"] = f"{HISTORY_PREFIX}SETHASH: SHA-256 of the effective settings (JSON)"
    for item in raw:
        name = Path(item["path"]).name
        header["HISTORY"] = f"{HISTORY_PREFIX}raw {name} {item['size_bytes']} bytes sha256:"
        # A hash line of its own: with the name it would not fit one card.
        header["HISTORY"] = f"{HISTORY_PREFIX}{item['sha256'] or 'unknown'}"
    for item in calibration:
        header["HISTORY"] = (
            f"{HISTORY_PREFIX}cal {item['calibrator']} transit {item['transit_time']}"
        )
        header["HISTORY"] = f"{HISTORY_PREFIX}caltable {Path(item['path']).name}"
    return header


def _is_provenance(card: fits.Card) -> bool:
    if card.keyword == "HISTORY":
        return str(card.value).startswith(HISTORY_PREFIX)
    return card.keyword in {keyword for keyword, _, _ in KEYWORDS} | set(SUMMARY)
