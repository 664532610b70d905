"""Provenance in a FITS header: keywords and HISTORY lines that say what made a file, and
the verdict of its quality assessment.

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


def write_provenance(
    path: Path, record: dict[str, Any], attempt: str, quality: dict[str, Any] | None = None
) -> bool:
    """Write ``record`` (and the ``quality`` assessment, when given) into the primary
    header of the FITS file ``path``, replacing any written before; True when the file
    changed (False: it holds these already).

    The file is rewritten under a temporary name private to ``attempt`` and renamed over
    ``path``, so a crash leaves the old file or the new one, never half of one.

    Raises
    ------
    OSError
        When the file cannot be read or written.
    """
    cards = provenance_cards(record)
    if quality is not None:
        cards += quality_cards(quality)
    wanted = [(card.keyword, card.value) for card in cards.cards]
    with fits.open(path) as hdus:
        header = hdus[0].header
        if [(card.keyword, card.value) for card in header.cards if _is_ours(card)] == wanted:
            return False
        kept = [card for card in header.cards if not _is_ours(card)]
        hdus[0].header = fits.Header(kept) + cards
        partial = attempt_path(path, attempt)
        try:
            hdus.writeto(partial, overwrite=True)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return True


#: Quality keywords: (FITS keyword, field of the report's figures, comment).
QUALITY_KEYWORDS = (
    ("QARMS", "rms_jy", "median background rms, Jy/beam"),
    ("QAEXPRMS", "expected_rms_jy", "rms expected (radiometer equation), Jy/beam"),
    ("QANOISER", "noise_ratio", "measured over expected rms"),
    ("QADYNRNG", "dynamic_range", "peak over rms"),
    ("QABLANK", "blank_fraction", "fraction of blank pixels"),
    ("QADRA", "median_d_ra_arcsec", "median RA offset from reference, arcsec"),
    ("QADDEC", "median_d_dec_arcsec", "median Dec offset from reference, arcsec"),
    ("QAFLUXSC", "flux_scale", "median measured/reference flux"),
    ("QAFLUXSD", "flux_scatter", "scatter of measured/reference flux"),
)
#: Every HISTORY line of the quality assessment starts with this.
QUALITY_PREFIX = "QA "


def quality_cards(quality: dict[str, Any]) -> fits.Header:
    """The verdict, the override if any, the main figures, and each reason on a HISTORY
    line of its own (cut to fit one card)."""
    header = fits.Header()
    header["QASTATUS"] = (quality["quality"], "quality assessment: passed/warning/failed")
    header["QAACCEPT"] = (quality["accepted_by"] is not None, "failed QA accepted by a person")
    figures = quality["figures"]
    header["QANREF"] = (len(figures.get("matches", [])), "reference sources matched")
    for keyword, field, comment in QUALITY_KEYWORDS:
        if figures.get(field) is not None:
            header[keyword] = (round(float(figures[field]), 9), comment)
    for reason in quality["summary"].split("; "):
        header["HISTORY"] = f"{QUALITY_PREFIX}{reason}"[:72]
    if quality["accepted_by"] is not None:
        header["HISTORY"] = f"{QUALITY_PREFIX}accepted by {quality['accepted_by']}"[:72]
    return header


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


def _is_ours(card: fits.Card) -> bool:
    """A card of the provenance or of the quality assessment."""
    if card.keyword == "HISTORY":
        return str(card.value).startswith((HISTORY_PREFIX, QUALITY_PREFIX))
    ours = {keyword for keyword, _, _ in (*KEYWORDS, *QUALITY_KEYWORDS)}
    return card.keyword in ours | set(SUMMARY) | {"QASTATUS", "QAACCEPT", "QANREF"}
