"""Generate ``config/calibrators.toml`` and ``config/reference_sources.csv`` from the NRAO
VLA calibrator list.

The list (``vlacalibrators.txt``, NRAO's public text list) is not part of the repository;
this script takes from it only the figures the catalogue needs: name, J2000 position,
position code and 20 cm flux density. Run it from the repository root::

    python scripts/make_calibrator_catalogue.py [--source ../shared/data/vlacalibrators.txt]

Format read
-----------
One block per source: a ``J2000`` line (IAU name, equinox, position code A/B/C/T, RA as
``HHhMMmSS.SSSs``, Dec as ``DDdMM'SS.SS"``), a ``B1950`` line, then a band table whose
``20cm L`` row gives quality codes for VLA configurations A, B, C, D and the flux in Jy.
Quality codes: P (< 3 % closure errors), S (3-10 %), W (10 %, weak), C (confused),
X (unusable), ? (unknown). Position codes: A (< 2 mas), B (2-10 mas), C (10-150 mas),
T (> 150 mas).

Selection
---------
A DSA-110 bandpass calibrator must dominate a 2.7 deg primary beam, transit close to the
pointing declination and look like a point to the array. DSA-110's baselines (up to a
few km) are closest to VLA configurations C (3.4 km) and D (1 km), so the C and D codes
are the ones that matter. Sources are taken in tiers, each only to fill declinations
that the tiers before it left uncovered:

1. ``primary``: position code A or B, 20 cm quality P or S in both C and D, >= 2.5 Jy.
2. ``fainter``: as 1, but >= 1.0 Jy.
3. ``any-position``: as 2, but any position code. Even T (> 0.15 arcsec) is far below
   DSA-110's ~20 arcsec synthesised beam; the C/D quality codes still screen structure.

Within a tier, sources are taken brightest first and kept only if they cover some
declination in the target range that is not yet covered (a greedy cover), so a faint
source is never kept next to a bright one it adds nothing to. Each kept source covers
``dec +- 1.5 deg`` (the Airy power there is 0.42 at 1.4 GHz).

Declinations still uncovered after tier 3 are filled one by one with whichever source
would look brightest there through the primary beam (flux x Airy power at the offset, at
the 1.405 GHz band centre): either a source already kept, its tolerance widened just
enough (at most 2.5 deg; marked ``widened``), or a fainter one (``gap-filler``: tier 3
rules down to 0.5 Jy). Whatever is left is printed as uncovered and the script exits non-zero.

0834+555 and 1331+305 (3C286) are always included: the design names them.

Reference sources
-----------------
``config/reference_sources.csv``, the default reference catalogue of the quality
assessment (astrometry and flux scale of every mosaic), holds every source of the list
with a 20 cm flux density whose quality codes in configurations C and D are P, S or W
(neither confused nor unusable at DSA-110's resolution): name, RA and Dec (deg), 1.4 GHz
flux density (Jy).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from reconciler.sky import DSA110_BAND_CENTRE_HZ, airy_power

DEFAULT_SOURCE = Path("../shared/data/vlacalibrators.txt")
DEFAULT_OUTPUT = Path("config/calibrators.toml")
DEFAULT_REFERENCE_OUTPUT = Path("config/reference_sources.csv")

#: Declinations (deg) that must have a calibrator, and the grid they are checked on.
DEC_RANGE = (0.0, 80.0)
DEC_STEP = 0.05

DEFAULT_TOLERANCE_DEG = 1.5
MAX_TOLERANCE_DEG = 2.5

REQUIRED = ("0834+555", "1331+305")

_J2000 = re.compile(
    r"^(?P<name>\S+)\s+J2000\s+(?P<pc>[ABCT])\s+"
    r"(?P<rh>\d+)h(?P<rm>\d+)m(?P<rs>[\d.]+)s\s+"
    r"(?P<sign>[-+]?)(?P<dd>\d+)d(?P<dm>\d+)'(?P<ds>[\d.]+)\""
)
_L_BAND = re.compile(
    r"^\s*20cm\s+L\s+(?P<a>\S)\s+(?P<b>\S)\s+(?P<c>\S)\s+(?P<d>\S)\s+(?P<flux>\S+)"
)


@dataclass(frozen=True)
class Source:
    """One calibrator from the list, with its 20 cm row if it has one."""

    name: str
    ra_deg: float
    dec_deg: float
    position_code: str
    quality: str | None  # codes for configurations A, B, C, D, e.g. "SPPP"
    flux_jy: float | None


@dataclass(frozen=True)
class Tier:
    label: str
    position_codes: str
    min_flux_jy: float


TIERS = (
    Tier("primary", "AB", 2.5),
    Tier("fainter", "AB", 1.0),
    Tier("any-position", "ABCT", 1.0),
)
GAP_FILLER = Tier("gap-filler", "ABCT", 0.5)


@dataclass(frozen=True)
class Selected:
    source: Source
    tolerance_deg: float
    reason: str


def parse_list(lines: Iterable[str]) -> list[Source]:
    """Parse the VLA calibrator list into sources (20 cm row attached when present)."""
    sources: list[Source] = []
    for number, line in enumerate(lines, start=1):
        if match := _J2000.match(line):
            sources.append(_source_from(match))
            continue
        if (match := _L_BAND.match(line)) is None:
            continue
        if not sources:
            raise ValueError(f"line {number}: 20cm row before any J2000 line")
        if sources[-1].quality is not None:
            raise ValueError(f"line {number}: second 20cm row for {sources[-1].name}")
        quality = "".join(match.group(k) for k in "abcd")
        flux = _float_or_none(match.group("flux"))
        sources[-1] = replace(sources[-1], quality=quality, flux_jy=flux)
    return sources


def _source_from(match: re.Match[str]) -> Source:
    ra_h = int(match["rh"]) + int(match["rm"]) / 60 + float(match["rs"]) / 3600
    # Read the sign from the text: "-00d30'..." has a degree field of 0, not negative.
    sign = -1.0 if match["sign"] == "-" else 1.0
    dec = sign * (int(match["dd"]) + int(match["dm"]) / 60 + float(match["ds"]) / 3600)
    return Source(match["name"], 15.0 * ra_h, dec, match["pc"], None, None)


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # the list writes "?" for an unknown flux


def eligible(source: Source, tier: Tier) -> bool:
    """True when a source passes a tier's position, quality and flux cuts."""
    if source.quality is None or source.flux_jy is None:
        return False
    compact_at_short_baselines = all(code in "PS" for code in source.quality[2:])
    return (
        source.position_code in tier.position_codes
        and compact_at_short_baselines
        and source.flux_jy >= tier.min_flux_jy
    )


def select(sources: Sequence[Source]) -> tuple[list[Selected], np.ndarray]:
    """Choose calibrators covering ``DEC_RANGE``; return them and the uncovered decs."""
    grid = np.round(np.arange(DEC_RANGE[0], DEC_RANGE[1] + DEC_STEP / 2, DEC_STEP), 6)
    covered = np.zeros(grid.shape, dtype=bool)
    by_name = {s.name: s for s in sources}
    chosen: dict[str, Selected] = {}

    def take(source: Source, tolerance: float, reason: str) -> None:
        chosen[source.name] = Selected(source, tolerance, reason)
        covered[np.abs(grid - source.dec_deg) <= tolerance + 1e-9] = True

    for name in REQUIRED:
        take(by_name[name], DEFAULT_TOLERANCE_DEG, "required")
    for tier in TIERS:
        candidates = [s for s in sources if eligible(s, tier) and s.name not in chosen]
        for source in sorted(candidates, key=lambda s: (-(s.flux_jy or 0.0), s.name)):
            reach = np.abs(grid - source.dec_deg) <= DEFAULT_TOLERANCE_DEG
            if np.any(reach & ~covered):
                take(source, DEFAULT_TOLERANCE_DEG, tier.label)
    _widen(sources, grid, covered, chosen)
    return sorted(chosen.values(), key=lambda c: (c.source.dec_deg, c.source.name)), grid[~covered]


def _widen(
    sources: Sequence[Source],
    grid: np.ndarray,
    covered: np.ndarray,
    chosen: dict[str, Selected],
) -> None:
    """Cover each still-uncovered dec with the source that looks brightest there."""
    pool = [s for s in sources if eligible(s, GAP_FILLER) or s.name in chosen]
    for index in np.flatnonzero(~covered):
        if covered[index]:
            continue
        dec = grid[index]
        near = [s for s in pool if abs(s.dec_deg - dec) <= MAX_TOLERANCE_DEG]
        if not near:
            continue
        best = max(near, key=lambda s: (_attenuated_flux(s, dec), s.name))
        needed = math.ceil((abs(best.dec_deg - dec) - 1e-9) * 20) / 20  # next 0.05 deg up
        previous = chosen.get(best.name)
        if previous is None:
            previous = Selected(best, DEFAULT_TOLERANCE_DEG, GAP_FILLER.label)
        chosen[best.name] = replace(previous, tolerance_deg=max(needed, previous.tolerance_deg))
        covered[np.abs(grid - best.dec_deg) <= chosen[best.name].tolerance_deg + 1e-9] = True


def _attenuated_flux(source: Source, dec_deg: float) -> float:
    offset = math.radians(abs(source.dec_deg - dec_deg))
    return float(source.flux_jy or 0.0) * float(airy_power(offset, DSA110_BAND_CENTRE_HZ))


def render(selected: Sequence[Selected], source_name: str) -> str:
    """Return the TOML text for the chosen calibrators, with a generated-file header."""
    header = [
        "# DSA-110 bandpass calibrators, one [[calibrator]] table each.",
        "#",
        "# GENERATED by scripts/make_calibrator_catalogue.py from the NRAO VLA calibrator",
        f"# list ({source_name}); do not edit by hand, rerun the script.",
        "# Figures are the list's J2000 position, position code and 20 cm (L band) flux.",
        "# Selection rules: see the script's docstring. Coverage: every declination from",
        f"# {DEC_RANGE[0]:g} to {DEC_RANGE[1]:g} deg lies within dec_tolerance_deg of an entry.",
        "# The comment above each entry says which selection rule kept it.",
    ]
    blocks = ["\n".join(header)]
    for item in selected:
        s = item.source
        blocks.append(
            "\n".join(
                [
                    f"# {_describe(item)}; 20 cm quality A/B/C/D = {'/'.join(s.quality or '')}",
                    "[[calibrator]]",
                    f'name = "{s.name}"',
                    f"ra_deg = {s.ra_deg:.7f}",
                    f"dec_deg = {s.dec_deg:.7f}",
                    f"flux_jy = {s.flux_jy:g}",
                    f"dec_tolerance_deg = {item.tolerance_deg:g}",
                    f'position_code = "{s.position_code}"',
                ]
            )
        )
    return "\n\n".join(blocks) + "\n"


def _describe(item: Selected) -> str:
    if item.tolerance_deg > DEFAULT_TOLERANCE_DEG:
        return f"{item.reason}, widened"
    return item.reason


def _runs(decs: np.ndarray) -> list[tuple[float, float]]:
    runs: list[tuple[float, float]] = []
    for dec in decs:
        if runs and dec - runs[-1][1] <= DEC_STEP * 1.5:
            runs[-1] = (runs[-1][0], float(dec))
        else:
            runs.append((float(dec), float(dec)))
    return runs


def render_reference(sources: Sequence[Source], source_name: str) -> str:
    """Return the CSV text of the reference sources (see the module docstring)."""
    usable = [
        s
        for s in sources
        if s.flux_jy is not None
        and s.quality is not None
        and all(c in "PSW" for c in s.quality[2:])
    ]
    lines = [
        "# Reference sources for the quality assessment of DSA-110 mosaics.",
        "# GENERATED by scripts/make_calibrator_catalogue.py from the NRAO VLA calibrator",
        f"# list ({source_name}); do not edit by hand, rerun the script. Sources with a 20 cm",
        "# flux density and quality P, S or W in VLA configurations C and D.",
        "name,ra_deg,dec_deg,flux_jy",
    ]
    lines += [
        f"{s.name},{s.ra_deg:.7f},{s.dec_deg:.7f},{s.flux_jy:g}"
        for s in sorted(usable, key=lambda s: (s.ra_deg, s.name))
    ]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the list, select calibrators, write the TOML file and report coverage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--reference-output", type=Path, default=DEFAULT_REFERENCE_OUTPUT)
    args = parser.parse_args(argv)

    sources = parse_list(args.source.read_text(encoding="ascii").splitlines())
    selected, uncovered = select(sources)
    _write(args.output, render(selected, args.source.name))
    reference = render_reference(sources, args.source.name)
    _write(args.reference_output, reference)

    print(f"{len(sources)} sources parsed, {len(selected)} calibrators written to {args.output}")
    print(f"{reference.count(chr(10)) - 5} reference sources written to {args.reference_output}")
    for item in selected:
        s = item.source
        print(
            f"  {s.name:9s} dec {s.dec_deg:7.3f}  {s.flux_jy:6.2f} Jy  "
            f"+-{item.tolerance_deg:.2f}  {s.position_code}  {_describe(item)}"
        )
    if uncovered.size:
        spans = ", ".join(f"{a:g}..{b:g}" for a, b in _runs(uncovered))
        print(f"UNCOVERED declinations (deg): {spans}", file=sys.stderr)
        return 1
    print(f"every dec {DEC_RANGE[0]:g}..{DEC_RANGE[1]:g} deg is covered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
