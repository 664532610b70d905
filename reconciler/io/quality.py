"""Quality figures measured on a staged mosaic, and the one-page QA figure.

Read: the mosaic and its weight map, the source finder's component table and background
rms map, the reference catalogue, and the calibrated Measurement Sets of the tiles (for the
radiometer equation: antennas, bandwidth, time on sky, flagged fraction, longest baseline).
The figure is written under an attempt-private name and renamed into place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from casacore import tables

from reconciler.io.sourcefind import Component, read_catalogue
from reconciler.naming import attempt_path, catalogue_paths, weight_map_of
from reconciler.quality import (
    Assessment,
    MissedReference,
    QualityFigures,
    ReferenceMatch,
    TileData,
    radiometer_rms_jy,
)

#: Frequency of the reference catalogue's flux densities (the VLA list's 20 cm band), Hz.
REFERENCE_FREQUENCY_HZ = 1.4e9
_SPEED_OF_LIGHT = 299_792_458.0
_ARCSEC_PER_RADIAN = math.degrees(1.0) * 3600.0
#: Parallel-hand correlation types (RR, LL, XX, YY): the ones Stokes I is made of.
_PARALLEL_HANDS = {5, 8, 9, 12}
#: Rows of FLAG read to estimate the flagged fraction: a sample, evenly spread.
_FLAG_SAMPLE_ROWS = 20_000
#: Column names accepted for the reference catalogue, lower case, first found wins.
_COLUMNS = {
    "name": ("name", "source", "id"),
    "ra": ("ra_deg", "ra", "raj2000", "ra_j2000"),
    "dec": ("dec_deg", "dec", "dej2000", "dec_j2000"),
    "flux": ("flux_jy", "s1400", "s1.4", "flux_1400", "flux", "s_1400"),
}


class QualityError(ValueError):
    """A file the assessment needs is missing or unreadable; the message names it."""


def tile_data(ms: Path) -> TileData:
    """What the radiometer equation needs of one calibrated Measurement Set.

    The flagged fraction is estimated from an even sample of rows, so a full-size MS is
    not read whole.
    """
    try:
        with tables.table(str(ms), ack=False) as main:
            n_rows = main.nrows()
            first, second = main.getcol("ANTENNA1"), main.getcol("ANTENNA2")
            cross = first != second
            times = main.getcol("TIME")
            interval = float(np.median(main.getcol("INTERVAL")))
            uvw = main.getcol("UVW")
            step = max(1, n_rows // _FLAG_SAMPLE_ROWS)
            flags = main.getcol("FLAG", 0, -1, step)
        with tables.table(str(ms / "SPECTRAL_WINDOW"), ack=False) as spw:
            widths = [np.abs(spw.getcell("CHAN_WIDTH", r)) for r in range(spw.nrows())]
            highest = max(float(np.max(spw.getcell("CHAN_FREQ", r))) for r in range(spw.nrows()))
        with tables.table(str(ms / "POLARIZATION"), ack=False) as pol:
            types = [int(t) for t in pol.getcell("CORR_TYPE", 0)]
    except (RuntimeError, OSError) as exc:
        raise QualityError(f"{ms}: unreadable Measurement Set ({exc})") from exc
    parallel = [i for i, t in enumerate(types) if t in _PARALLEL_HANDS] or list(range(len(types)))
    sampled_cross = cross[::step][: flags.shape[0]]
    sample = flags[sampled_cross][:, :, parallel]
    antennas = np.union1d(first[cross], second[cross])
    longest_m = float(np.max(np.linalg.norm(uvw[cross], axis=1))) if cross.any() else 0.0
    return TileData(
        n_antennas=int(antennas.size),
        n_polarisations=len(parallel),
        bandwidth_hz=float(sum(np.sum(w) for w in widths)),
        time_on_sky_s=float(np.unique(times).size * interval),
        flagged_fraction=float(sample.mean()) if sample.size else 1.0,
        longest_baseline_wavelengths=longest_m * highest / _SPEED_OF_LIGHT,
    )


def read_reference(path: Path) -> list[dict[str, Any]]:
    """The reference catalogue: name, RA and Dec (deg) and flux density (Jy) of each
    source. CSV, FITS and VOTable are read; column names are matched without case."""
    formats = {".csv": "ascii.csv", ".fits": "fits", ".xml": "votable", ".vot": "votable"}
    chosen = formats.get(path.suffix.lower())
    try:
        if chosen == "ascii.csv":
            table = Table.read(path, format=chosen, comment="#")
        else:
            table = Table.read(path, format=chosen)
    except (OSError, ValueError) as exc:
        raise QualityError(f"reference catalogue {path}: unreadable ({exc})") from exc
    names = {name.lower(): name for name in table.colnames}
    found: dict[str, str] = {}
    for key, aliases in _COLUMNS.items():
        column = next((names[a] for a in aliases if a in names), None)
        if column is None and key != "name":
            raise QualityError(
                f"reference catalogue {path}: no {key} column (one of {', '.join(aliases)})"
            )
        if column is not None:
            found[key] = column
    return [
        {
            "name": str(row[found["name"]]) if "name" in found else f"ref-{i}",
            "ra_deg": float(row[found["ra"]]),
            "dec_deg": float(row[found["dec"]]),
            "flux_jy": float(row[found["flux"]]),
        }
        for i, row in enumerate(table)
    ]


def measure(
    mosaic: Path,
    tiles: Sequence[TileData],
    reference: Sequence[dict[str, Any]],
    *,
    sefd_jy: float,
    efficiency: float,
    spectral_index: float,
    match_radius_beams: float,
    tile_problem: str | None = None,
) -> QualityFigures:
    """Measure the staged ``mosaic`` (with its weight map, catalogue and rms map beside
    it). ``tile_problem`` says why ``tiles`` misses some tile, when it does."""
    weight_path = weight_map_of(mosaic)
    catalogue_path, rms_path = catalogue_paths(mosaic)
    for needed in (mosaic, weight_path, catalogue_path, rms_path):
        if not needed.is_file():
            raise QualityError(f"{needed} is missing")
    with fits.open(mosaic) as hdus:
        header = hdus[0].header
        image = np.squeeze(np.asarray(hdus[0].data, dtype=np.float64))
    weight = np.squeeze(np.asarray(fits.getdata(weight_path), dtype=np.float64))
    catalogue = read_catalogue(catalogue_path, rms_path)
    rms_map = np.squeeze(np.asarray(fits.getdata(rms_path), dtype=np.float64))
    finite = np.isfinite(image)
    if not finite.any():
        raise QualityError(f"{mosaic}: every pixel is blank")
    noise_pixels = finite & np.isfinite(rms_map) & (rms_map > 0)
    rms = float(np.median(rms_map[noise_pixels])) if noise_pixels.any() else math.nan

    expected, problem = None, tile_problem
    if tiles:
        sigma = float(np.median([radiometer_rms_jy(t, sefd_jy, efficiency) for t in tiles]))
        weighted = noise_pixels & np.isfinite(weight) & (weight > 0)
        if weighted.any() and math.isfinite(sigma):
            expected = float(np.median(sigma / np.sqrt(weight[weighted])))
    elif problem is None:
        problem = "no calibrated data of the tiles to compute it from"

    beam = _beam_arcsec(header)
    longest = max((t.longest_baseline_wavelengths for t in tiles), default=0.0)
    frequency = float(header.get("FREQ", REFERENCE_FREQUENCY_HZ))
    matches, missed = _match_reference(
        reference,
        catalogue.components,
        WCS(header).celestial,
        image,
        rms_map,
        radius_arcsec=match_radius_beams * beam[0] if beam[0] else 0.0,
        scale=(frequency / REFERENCE_FREQUENCY_HZ) ** spectral_index,
    )
    values = image[finite]
    edges = np.linspace(-8.0 * rms, 8.0 * rms, 81) if rms > 0 else np.linspace(-1, 1, 81)
    counts, _ = np.histogram(values, bins=edges)
    return QualityFigures(
        rms_jy=rms,
        peak_jy=float(np.max(values)),
        blank_fraction=float(1.0 - finite.mean()),
        expected_rms_jy=expected,
        expected_problem=problem if expected is None else None,
        beam_major_arcsec=beam[0],
        beam_minor_arcsec=beam[1],
        beam_pa_deg=beam[2],
        diffraction_arcsec=_ARCSEC_PER_RADIAN / longest if longest > 0 else None,
        matches=tuple(matches),
        missed=tuple(missed),
        histogram_edges=tuple(float(e) for e in edges),
        histogram_counts=tuple(int(c) for c in counts),
    )


def _beam_arcsec(header: fits.Header) -> tuple[float | None, float | None, float | None]:
    values = []
    for key, scale in (("BMAJ", 3600.0), ("BMIN", 3600.0), ("BPA", 1.0)):
        value = header.get(key)
        values.append(float(value) * scale if isinstance(value, int | float) else None)
    return values[0], values[1], values[2]


def _match_reference(
    reference: Sequence[dict[str, Any]],
    components: Sequence[Component],
    wcs: WCS,
    image: np.ndarray,
    rms_map: np.ndarray,
    *,
    radius_arcsec: float,
    scale: float,
) -> tuple[list[ReferenceMatch], list[MissedReference]]:
    """Each reference source on a non-blank pixel, matched to the nearest component
    within ``radius_arcsec``; those left unmatched, with the signal-to-noise expected."""
    if not reference:
        return [], []
    ra = np.array([r["ra_deg"] for r in reference])
    dec = np.array([r["dec_deg"] for r in reference])
    x, y = wcs.world_to_pixel_values(ra, dec)
    cols, rows = np.round(x).astype(int), np.round(y).astype(int)
    inside = (rows >= 0) & (rows < image.shape[0]) & (cols >= 0) & (cols < image.shape[1])
    found_ra = np.array([c.ra_deg for c in components])
    found_dec = np.array([c.dec_deg for c in components])
    matches: list[ReferenceMatch] = []
    missed: list[MissedReference] = []
    for i in np.flatnonzero(inside):
        if not np.isfinite(image[rows[i], cols[i]]):
            continue
        source = reference[i]
        expected_jy = source["flux_jy"] * scale
        separation = _separation_arcsec(ra[i], dec[i], found_ra, found_dec)
        nearest = int(np.argmin(separation)) if separation.size else -1
        if nearest >= 0 and separation[nearest] <= radius_arcsec:
            component = components[nearest]
            cos_dec = math.cos(math.radians(dec[i]))
            d_ra = (component.ra_deg - ra[i] + 180.0) % 360.0 - 180.0
            matches.append(
                ReferenceMatch(
                    name=source["name"],
                    ra_deg=float(ra[i]),
                    dec_deg=float(dec[i]),
                    reference_jy=float(expected_jy),
                    measured_jy=component.flux_jy,
                    d_ra_arcsec=float(d_ra * cos_dec * 3600.0),
                    d_dec_arcsec=float((component.dec_deg - dec[i]) * 3600.0),
                )
            )
        else:
            local = rms_map[rows[i], cols[i]]
            snr = expected_jy / local if np.isfinite(local) and local > 0 else math.inf
            missed.append(
                MissedReference(
                    name=source["name"],
                    ra_deg=float(ra[i]),
                    dec_deg=float(dec[i]),
                    reference_jy=float(expected_jy),
                    expected_snr=float(snr),
                )
            )
    return matches, missed


def _separation_arcsec(
    ra_deg: float, dec_deg: float, ras: np.ndarray, decs: np.ndarray
) -> np.ndarray:
    """Great-circle distances (haversine) from one position to many, arcseconds."""
    ra1, dec1 = math.radians(ra_deg), math.radians(dec_deg)
    ra2, dec2 = np.radians(ras), np.radians(decs)
    h = (
        np.sin((dec2 - dec1) / 2) ** 2
        + math.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    )
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))) * 3600.0


def draw_figure(
    figures: QualityFigures, assessment: Assessment, title: str, path: Path, attempt: str
) -> None:
    """The one-page QA figure: position offsets, flux ratios against flux, and the pixel
    histogram against the expected noise, under the verdict and its reasons."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.6))
    offsets, fluxes, pixels = axes
    beam = figures.beam_major_arcsec
    if figures.matches:
        offsets.scatter(
            [m.d_ra_arcsec for m in figures.matches],
            [m.d_dec_arcsec for m in figures.matches],
            color="tab:blue",
        )
        fluxes.scatter(
            [m.reference_jy for m in figures.matches],
            [m.flux_ratio for m in figures.matches],
            color="tab:blue",
        )
        fluxes.set_xscale("log")
    else:
        for ax in (offsets, fluxes):
            ax.text(0.5, 0.5, "no reference source matched", ha="center", transform=ax.transAxes)
    if beam:
        offsets.add_patch(plt.Circle((0, 0), beam / 2, fill=False, ls="--", color="grey"))
        offsets.set_xlim(-beam, beam)
        offsets.set_ylim(-beam, beam)
        offsets.set_aspect("equal")
    offsets.axhline(0, color="grey", lw=0.5)
    offsets.axvline(0, color="grey", lw=0.5)
    offsets.set_xlabel("ΔRA cos Dec (arcsec)")
    offsets.set_ylabel("ΔDec (arcsec)")
    offsets.set_title("astrometry (circle: half the beam)")
    fluxes.axhline(1.0, color="grey", lw=0.5)
    fluxes.set_xlabel("reference flux density (Jy)")
    fluxes.set_ylabel("measured / reference")
    fluxes.set_title("flux scale")
    edges = np.asarray(figures.histogram_edges)
    if edges.size > 1:
        counts = np.asarray(figures.histogram_counts)
        centres = (edges[:-1] + edges[1:]) / 2
        pixels.step(centres * 1e3, np.maximum(counts, 0.5), where="mid", label="pixels")
        width = edges[1] - edges[0]
        for sigma, label, style in (
            (figures.expected_rms_jy, "expected noise", "--"),
            (figures.rms_jy, "measured rms", ":"),
        ):
            if sigma and sigma > 0:
                gauss = counts.sum() * width / (sigma * math.sqrt(2 * math.pi))
                model = gauss * np.exp(-0.5 * (centres / sigma) ** 2)
                pixels.plot(centres * 1e3, np.maximum(model, 0.5), style, label=label)
        pixels.set_yscale("log")
        pixels.legend()
    pixels.set_xlabel("pixel value (mJy/beam)")
    pixels.set_title("pixel histogram")
    reasons = list(assessment.reasons[:6]) or ["all checks passed"]
    fig.suptitle("\n".join([f"{title}: {assessment.quality.value.upper()}", *reasons]), fontsize=9)
    # Room at the top for the title and one line per reason.
    fig.tight_layout(rect=(0, 0, 1, 0.95 - 0.035 * len(reasons)))
    partial = attempt_path(path, attempt)
    try:
        fig.savefig(partial, format="png", dpi=90)
        os.replace(partial, path)
    finally:
        plt.close(fig)
        partial.unlink(missing_ok=True)
