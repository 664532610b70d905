"""Association: which components of a new catalogue are detections of sky sources already
known, which are sources seen for the first time, and which known sources were missed.

Pure: a function of the positions it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reconciler.sky import angular_separation_deg


@dataclass(frozen=True)
class Position:
    """A point on the sky (ICRS degrees); ``brightness`` orders new sources (Jy/beam)."""

    ra_deg: float
    dec_deg: float
    brightness: float = 0.0


@dataclass(frozen=True)
class SkyBox:
    """RA from ``ra_low`` east to ``ra_high`` (through 0 when ``ra_low > ra_high``) and Dec
    from ``dec_low`` to ``dec_high``, degrees."""

    ra_low: float
    ra_high: float
    dec_low: float
    dec_high: float

    @classmethod
    def around(cls, ras: Sequence[float], decs: Sequence[float], margin_deg: float) -> SkyBox:
        """The smallest box holding the positions, widened by ``margin_deg`` on the sky
        (a box reaching within a degree of a pole takes every RA)."""
        dec_low, dec_high = min(decs) - margin_deg, max(decs) + margin_deg
        widest = max(abs(dec_low), abs(dec_high))
        if widest >= 89.0:
            return cls(0.0, 360.0, max(dec_low, -90.0), min(dec_high, 90.0))
        ra_margin = margin_deg / math.cos(math.radians(widest))
        start, width = _ra_span(ras)
        if width + 2 * ra_margin >= 360.0:
            return cls(0.0, 360.0, dec_low, dec_high)
        return cls(
            (start - ra_margin) % 360.0, (start + width + ra_margin) % 360.0, dec_low, dec_high
        )


def _ra_span(ras: Sequence[float]) -> tuple[float, float]:
    """The start and width of the shortest RA interval holding every value."""
    ordered = sorted(r % 360.0 for r in ras)
    if len(ordered) == 1:
        return ordered[0], 0.0
    gaps = [(ordered[(i + 1) % len(ordered)] - ordered[i]) % 360.0 for i in range(len(ordered))]
    widest = max(range(len(gaps)), key=gaps.__getitem__)
    return ordered[(widest + 1) % len(ordered)], 360.0 - gaps[widest]


@dataclass(frozen=True)
class Association:
    """Components by index into the catalogue, known sources by their id.

    ``detected`` maps a component to the known source it detects (one each way);
    ``new`` are the components that are sources seen for the first time; ``missed`` are
    the known sources no component detects. A component that is neither (a second
    component within the radius of a source already detected) stays only in the
    catalogue.
    """

    detected: dict[int, int]
    new: tuple[int, ...]
    missed: tuple[int, ...]


def associate(
    components: Sequence[Position], known: dict[int, Position], radius_arcsec: float
) -> Association:
    """Match components to known sources within ``radius_arcsec``, closest pairs first.

    The components left that lie beyond the radius of every known source become new
    sources, brightest first, each absorbing the others within its radius (the Gaussians
    of one island are one source).
    """
    radius_deg = radius_arcsec / 3600.0
    known_ids = list(known)
    near_known = _within(components, [known[i] for i in known_ids], radius_deg)
    detected: dict[int, int] = {}
    taken: set[int] = set()
    for _, component, column in sorted(near_known):
        if component not in detected and column not in taken:
            detected[component] = known_ids[column]
            taken.add(column)
    close_to_known = {component for _, component, _ in near_known}
    candidates = sorted(
        (i for i in range(len(components)) if i not in close_to_known),
        key=lambda i: (-components[i].brightness, i),
    )
    new: list[int] = []
    for candidate in candidates:
        if not _within([components[candidate]], [components[i] for i in new], radius_deg):
            new.append(candidate)
    missed = tuple(known_ids[c] for c in range(len(known_ids)) if c not in taken)
    return Association(detected=detected, new=tuple(sorted(new)), missed=missed)


def _within(
    left: Sequence[Position], right: Sequence[Position], radius_deg: float
) -> list[tuple[float, int, int]]:
    """(separation, left index, right index) of every pair closer than ``radius_deg``."""
    if not left or not right:
        return []
    separation = angular_separation_deg(
        np.array([p.ra_deg for p in left])[:, None],
        np.array([p.dec_deg for p in left])[:, None],
        np.array([p.ra_deg for p in right])[None, :],
        np.array([p.dec_deg for p in right])[None, :],
    )
    rows, columns = np.nonzero(separation <= radius_deg)
    return [(float(separation[r, c]), int(r), int(c)) for r, c in zip(rows, columns, strict=True)]
