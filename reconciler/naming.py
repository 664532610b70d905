"""Deterministic names: action targets and the paths every product is written to.

The same inputs always give the same name, so a rerun finds the work it already did instead
of duplicating it (controller-runtime's rule for everything a reconciler creates).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from reconciler.errors import PermanentError

OBSERVATION_PREFIX = "obs:"
GROUP_PREFIX = "group:"


def observation_key(start: datetime) -> str:
    """Key of an observation: its data start time in UTC to the second, ISO format."""
    return start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def observation_target(key: str) -> str:
    """Action target naming an observation."""
    return f"{OBSERVATION_PREFIX}{key}"


def group_target(group_id: int) -> str:
    """Action target naming a mosaic group."""
    return f"{GROUP_PREFIX}{group_id}"


def parse_target(target: str) -> tuple[str, str]:
    """Split an action target into ``("obs", key)`` or ``("group", id)``.

    Raises
    ------
    ValueError
        If the target has neither prefix.
    """
    for prefix in (OBSERVATION_PREFIX, GROUP_PREFIX):
        if target.startswith(prefix):
            return prefix[:-1], target[len(prefix) :]
    raise ValueError(f"action target {target!r} names neither an observation nor a group")


#: An observation key as :func:`observation_key` makes it; nothing else goes into a path.
_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


def checked_key(key: str) -> str:
    """``key`` when it is an observation key, so it is safe in a path.

    Raises
    ------
    PermanentError
        When it is anything else (a row edited by hand, ``../`` in it).
    """
    if _KEY.fullmatch(key) is None:
        raise PermanentError(
            f"observation key {key!r} is not a UTC time such as 2025-03-01T00:00:00"
        )
    return key


#: A settings fingerprint (:mod:`reconciler.fingerprint`); nothing else goes into a path.
_FINGERPRINT = re.compile(r"^[0-9a-f]{12}$")


def _stem(key: str, fingerprint: str | None) -> str:
    """``key``, then ``.fingerprint`` when given: products made under other settings get
    names of their own, so a product made again never overwrites (or is mistaken for) the
    one made before.

    Raises
    ------
    PermanentError
        When either is not what its maker makes.
    """
    if fingerprint is None:
        return checked_key(key)
    if _FINGERPRINT.fullmatch(fingerprint) is None:
        raise PermanentError(f"settings fingerprint {fingerprint!r} is not 12 hex digits")
    return f"{checked_key(key)}.{fingerprint}"


def measurement_set_path(work: Path, key: str, fingerprint: str | None = None) -> Path:
    """Where the MS converted from observation ``key`` (under settings ``fingerprint``) lives."""
    return work / "ms" / key[:10] / f"{_stem(key, fingerprint)}.ms"


def calibrated_ms_path(work: Path, key: str, fingerprint: str | None = None) -> Path:
    """Where the calibrated copy of observation ``key`` lives."""
    return work / "calibrated" / key[:10] / f"{_stem(key, fingerprint)}.cal.ms"


def caltable_prefix(work: Path, key: str, fingerprint: str | None = None) -> Path:
    """Prefix of the calibration tables solved on observation ``key``."""
    return work / "caltables" / key[:10] / _stem(key, fingerprint)


def image_prefix(work: Path, key: str, fingerprint: str | None = None) -> Path:
    """Prefix of the image products of observation ``key``; without a fingerprint, the
    prefix of every version of them."""
    return work / "images" / key[:10] / _stem(key, fingerprint)


def window_label(start: datetime, end: datetime) -> str:
    """Compact label of a window, used in mosaic file names."""
    fmt = "%Y%m%dT%H%M%S"
    return f"{start.astimezone(UTC).strftime(fmt)}_{end.astimezone(UTC).strftime(fmt)}"


def staging_dir(work: Path, group_id: int, generation: int) -> Path:
    """Staging directory of one generation of one mosaic group."""
    return work / "staging" / f"group{group_id:06d}_g{generation}"


_WEIGHT_MAP, _CATALOGUE, _RMS_MAP, _QA_FIGURE = (
    ".weight.fits",
    ".sources.fits",
    ".rms.fits",
    ".qa.png",
)

#: Files made and published beside a mosaic FITS (same stem, these suffixes).
COMPANION_SUFFIXES = (_WEIGHT_MAP, ".png", _CATALOGUE, _RMS_MAP, _QA_FIGURE)


def companion_paths(mosaic: Path) -> list[Path]:
    """The weight map, preview, source catalogue, rms map and QA figure beside a mosaic
    FITS file."""
    stem = mosaic.name.removesuffix(".fits")
    return [mosaic.with_name(stem + suffix) for suffix in COMPANION_SUFFIXES]


def weight_map_of(mosaic: Path) -> Path:
    """The weight map beside a mosaic."""
    return mosaic.with_name(mosaic.name.removesuffix(".fits") + _WEIGHT_MAP)


def quality_figure_of(mosaic: Path) -> Path:
    """The one-page quality assessment figure (PNG) beside a mosaic."""
    return mosaic.with_name(mosaic.name.removesuffix(".fits") + _QA_FIGURE)


def coverage_path(products: Path) -> Path:
    """The coverage map (IVOA MOC, FITS) of everything published under ``products``."""
    return products / "coverage.moc.fits"


def catalogue_paths(mosaic: Path) -> tuple[Path, Path]:
    """The source catalogue and the background rms map of a mosaic, beside it."""
    stem = mosaic.name.removesuffix(".fits")
    return mosaic.with_name(stem + _CATALOGUE), mosaic.with_name(stem + _RMS_MAP)


def rms_map_of(catalogue: Path) -> Path:
    """The background rms map beside a source catalogue."""
    return catalogue.with_name(catalogue.name.removesuffix(_CATALOGUE) + _RMS_MAP)


#: A name one attempt writes before renaming it into place: ``.<final>.attempt-<token>``.
_ATTEMPT_NAME = re.compile(r"^\.(?P<final>.+)\.attempt-(?P<attempt>[0-9a-f]{32})$")


def attempt_path(final: Path, attempt: str) -> Path:
    """Where attempt ``attempt`` (its lease token, 32 hex digits) writes ``final`` first.

    Beside the final name, hidden, and private to the attempt: two attempts never write the
    same file, and a dead attempt's leftovers are found by name (:func:`attempt_of`).
    """
    return final.with_name(f".{final.name}.attempt-{attempt}")


def attempt_of(name: str) -> str | None:
    """The attempt a temporary name belongs to, or None when ``name`` is no such name."""
    found = _ATTEMPT_NAME.match(name)
    return found.group("attempt") if found else None
