"""Combine imaged tiles into a primary-beam-weighted linear mosaic, with a quicklook PNG.

For tiles with apparent (not PB-corrected) images ``A_i`` and primary beams ``B_i``, the
mosaic is ``sum(B_i A_i) / sum(B_i**2)``: each tile's PB-corrected image ``A_i / B_i``
weighted by ``B_i**2``, its inverse noise variance. It is blank where the combined beam
``sqrt(sum(B_i**2))`` is below the cutoff, the noise there being more than ``1/cutoff``
times a tile's centre noise.

The common grid is a SIN projection centred between the tiles, with the tiles' cell, and
its reference pixel on a whole pixel (DESIGN §5). Tiles are resampled with
``reproject_interp`` (bicubic): the cell does not change, so no flux needs conserving and
interpolation is the exact operation wanted; bicubic keeps a point source's peak where
bilinear interpolation, averaging neighbours of a 4-pixel beam, under-reads it by up to
a few per cent.
"""

from __future__ import annotations

import math
import os
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.visualization import AsinhStretch, ImageNormalize
from astropy.wcs import WCS, FITSFixedWarning
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from reproject import reproject_interp

from reconciler.naming import attempt_path

#: Member keywords are MEMBER01..MEMBER99.
MAX_MEMBERS = 99
#: Points sampled along each edge of a tile to find its footprint on the mosaic grid.
_EDGE_SAMPLES = 64
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class MosaicError(ValueError):
    """Tiles cannot be combined (none given, unreadable, or without a beam)."""


@dataclass(frozen=True)
class Tile:
    """One imaged observation: its restored apparent image and its primary beam (FITS)."""

    image_path: Path
    pb_path: Path


@dataclass(frozen=True)
class MosaicResult:
    """The mosaic, its weight map and quicklook, and figures measured on the mosaic.

    ``peak_jy`` is the brightest valid pixel (Jy/beam); ``rms_jy`` the robust (MAD) rms
    over all valid pixels.
    """

    path: Path
    weight_path: Path
    png_path: Path
    peak_jy: float
    rms_jy: float
    shape: tuple[int, int]
    n_tiles: int


def mosaic_paths(out_path: Path | str) -> tuple[Path, Path, Path]:
    """Return (mosaic, weight map, PNG) paths for a mosaic written to ``out_path``."""
    out_path = Path(out_path)
    stem = out_path.name.removesuffix(".fits")
    return (
        out_path,
        out_path.with_name(f"{stem}.weight.fits"),
        out_path.with_name(f"{stem}.png"),
    )


def build_mosaic(
    tiles: Sequence[Tile],
    out_path: Path | str,
    *,
    pb_cutoff: float = 0.2,
    members: Sequence[str],
    date_obs: datetime,
    date_end: datetime,
    attempt: str = "",
) -> MosaicResult:
    """Build a PB²-weighted linear mosaic FITS, its weight map and a quicklook PNG.

    Every file is written under a temporary name private to ``attempt`` (this attempt's
    token; default a fresh one) and renamed into place, the mosaic last.
    If the three files exist, parse, and the mosaic lists the same ``members``, nothing
    is redone.

    Parameters
    ----------
    tiles
        Tiles on SIN grids with equal or similar cells; the mosaic uses the finest.
    out_path
        The mosaic FITS; beside it ``<stem>.weight.fits`` (sum of B², blank outside the
        cutoff) and ``<stem>.png``.
    pb_cutoff
        Blank where ``sqrt(sum(B_i**2))`` is below this.
    members
        Observation keys recorded in the header (``NMEMBERS``, ``MEMBER01``...), at most
        :data:`MAX_MEMBERS`.
    date_obs, date_end
        Timezone-aware start and end of the data, for ``DATE-OBS`` and ``DATE-END``.

    Returns
    -------
    MosaicResult

    Raises
    ------
    MosaicError
        If no tile is given, a tile cannot be read, or no pixel passes the cutoff.
    ValueError
        If there are more than :data:`MAX_MEMBERS` members or a date is naive.
    """
    if len(members) > MAX_MEMBERS:
        raise ValueError(f"at most {MAX_MEMBERS} members fit the header, got {len(members)}")
    for moment in (date_obs, date_end):
        if moment.tzinfo is None:
            raise ValueError(f"dates must be timezone-aware, got {moment!r}")
    mosaic_path, weight_path, png_path = mosaic_paths(out_path)
    existing = _existing_result(mosaic_path, weight_path, png_path, members)
    if existing is not None:
        return existing
    if not tiles:
        raise MosaicError(f"{mosaic_path}: no tiles to combine")

    mosaic_path.parent.mkdir(parents=True, exist_ok=True)
    loaded = [_load_tile(tile) for tile in tiles]
    wcs, shape = _common_grid(loaded)
    numerator = np.zeros(shape)
    weight = np.zeros(shape)
    for tile in loaded:
        box = _footprint_box(tile, wcs, shape)
        if box is None:
            continue
        rows, cols = box
        sub_wcs = wcs[rows, cols]
        sub_shape = (rows.stop - rows.start, cols.stop - cols.start)
        # Stacked, so that the pixel mapping is computed once for image and beam.
        image, beam = reproject_interp(
            (np.stack([tile.image, tile.beam]), tile.wcs),
            sub_wcs,
            sub_shape,
            order="bicubic",
            return_footprint=False,
            # The round-trip check guards against wrapped projections; between SIN grids
            # a few degrees apart there are none, and it doubles the cost.
            roundtrip_coords=False,
        )
        usable = np.isfinite(image) & np.isfinite(beam) & (beam > 0)
        numerator[rows, cols] += np.where(usable, beam * image, 0.0)
        weight[rows, cols] += np.where(usable, beam**2, 0.0)

    valid = weight >= pb_cutoff**2
    if not valid.any():
        raise MosaicError(f"{mosaic_path}: no pixel has a combined beam above {pb_cutoff}")
    rows, cols = _bounding_slices(valid)
    wcs, valid = wcs[rows, cols], valid[rows, cols]
    weight = weight[rows, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        mosaic = np.where(valid, numerator[rows, cols] / weight, np.nan).astype(np.float32)
    weight_map = np.where(valid, weight, np.nan).astype(np.float32)

    peak = float(np.nanmax(mosaic))
    rms = _robust_rms(mosaic)
    header = _mosaic_header(wcs, loaded, members, date_obs, date_end, pb_cutoff, peak, rms)
    weight_header = header.copy()
    weight_header["BUNIT"] = ""
    weight_header["BTYPE"] = "Weight"
    weight_header["COMMENT"] = "sum over tiles of the primary beam squared"
    for key in ("BMAJ", "BMIN", "BPA", "PEAK", "RMS"):
        del weight_header[key]

    attempt = attempt or uuid.uuid4().hex
    _write_fits(weight_map, weight_header, attempt_path(weight_path, attempt), weight_path)
    _write_png(
        mosaic,
        wcs,
        attempt_path(png_path, attempt),
        png_path,
        peak,
        rms,
        date_obs,
        date_end,
        len(members),
    )
    _write_fits(mosaic, header, attempt_path(mosaic_path, attempt), mosaic_path)
    return MosaicResult(
        path=mosaic_path,
        weight_path=weight_path,
        png_path=png_path,
        peak_jy=peak,
        rms_jy=rms,
        shape=(int(mosaic.shape[0]), int(mosaic.shape[1])),
        n_tiles=len(loaded),
    )


@dataclass(frozen=True)
class _LoadedTile:
    image: np.ndarray
    beam: np.ndarray
    wcs: WCS
    header: fits.Header
    path: Path


def _load_tile(tile: Tile) -> _LoadedTile:
    try:
        with fits.open(tile.image_path) as hdus:
            header = hdus[0].header.copy()
            image = np.asarray(hdus[0].data, dtype=np.float64)
        beam = np.asarray(fits.getdata(tile.pb_path), dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise MosaicError(f"{tile.image_path}: unreadable tile ({exc})") from exc
    image, beam = image.reshape(image.shape[-2:]), beam.reshape(beam.shape[-2:])
    if image.shape != beam.shape:
        raise MosaicError(f"{tile.image_path}: image {image.shape} and beam {beam.shape} differ")
    if "BMAJ" not in header or "BMIN" not in header:
        raise MosaicError(f"{tile.image_path}: no restoring beam (BMAJ/BMIN) in the header")
    with warnings.catch_warnings():
        # astropy notes, noisily, that it derived MJD-OBS from DATE-OBS; nothing to act on.
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header).celestial
    return _LoadedTile(image=image, beam=beam, wcs=wcs, header=header, path=tile.image_path)


def _common_grid(tiles: Sequence[_LoadedTile]) -> tuple[WCS, tuple[int, int]]:
    """A SIN grid centred between the tiles, covering all of them, reference pixel whole."""
    cell_deg = min(float(np.abs(tile.wcs.proj_plane_pixel_scales()[1].value)) for tile in tiles)
    centres = np.array([_unit_vector(*tile.wcs.wcs.crval) for tile in tiles]).mean(axis=0)
    ra0 = math.degrees(math.atan2(centres[1], centres[0])) % 360.0
    dec0 = math.degrees(math.atan2(centres[2], math.hypot(centres[0], centres[1])))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.crval = [ra0, dec0]
    wcs.wcs.cdelt = [-cell_deg, cell_deg]
    wcs.wcs.crpix = [1.0, 1.0]
    corners = np.concatenate([_edge_pixels_on(tile, wcs) for tile in tiles], axis=1)
    x_min, y_min = np.floor(np.nanmin(corners, axis=1)).astype(int)
    x_max, y_max = np.ceil(np.nanmax(corners, axis=1)).astype(int)
    # Integer shifts only: the reference point stays at the centre of a pixel.
    wcs.wcs.crpix = [1.0 - x_min, 1.0 - y_min]
    return wcs, (int(y_max - y_min + 1), int(x_max - x_min + 1))


def _edge_pixels_on(tile: _LoadedTile, wcs: WCS) -> np.ndarray:
    """The (x, y) pixels on ``wcs`` of points along the edges of a tile, shape (2, n)."""
    ny, nx = tile.image.shape
    along_x = np.linspace(0, nx - 1, _EDGE_SAMPLES)
    along_y = np.linspace(0, ny - 1, _EDGE_SAMPLES)
    x = np.concatenate([along_x, along_x, np.zeros(_EDGE_SAMPLES), np.full(_EDGE_SAMPLES, nx - 1)])
    y = np.concatenate([np.zeros(_EDGE_SAMPLES), np.full(_EDGE_SAMPLES, ny - 1), along_y, along_y])
    ra, dec = tile.wcs.pixel_to_world_values(x, y)
    return np.asarray(wcs.world_to_pixel_values(ra, dec))


def _footprint_box(
    tile: _LoadedTile, wcs: WCS, shape: tuple[int, int]
) -> tuple[slice, slice] | None:
    """Rows and columns of the mosaic grid that the tile covers, or None."""
    edges = _edge_pixels_on(tile, wcs)
    x_min, y_min = np.floor(np.nanmin(edges, axis=1)).astype(int)
    x_max, y_max = np.ceil(np.nanmax(edges, axis=1)).astype(int)
    rows = slice(max(0, y_min), min(shape[0], y_max + 1))
    cols = slice(max(0, x_min), min(shape[1], x_max + 1))
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return None
    return rows, cols


def _bounding_slices(mask: np.ndarray) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _unit_vector(ra_deg: float, dec_deg: float) -> np.ndarray:
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    return np.array([math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)])


def _robust_rms(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(1.4826 * np.median(np.abs(finite - np.median(finite))))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _mosaic_header(
    wcs: WCS,
    tiles: Sequence[_LoadedTile],
    members: Sequence[str],
    date_obs: datetime,
    date_end: datetime,
    pb_cutoff: float,
    peak: float,
    rms: float,
) -> fits.Header:
    header = wcs.to_header()
    header["BUNIT"] = ("Jy/beam", "PB-corrected brightness")
    header["BTYPE"] = "Intensity"
    # The widest tile beam: no tile's sources are sharper than that.
    widest = max(tiles, key=lambda tile: tile.header["BMAJ"] * tile.header["BMIN"]).header
    header["BMAJ"] = (float(widest["BMAJ"]), "restoring beam major FWHM, deg")
    header["BMIN"] = (float(widest["BMIN"]), "restoring beam minor FWHM, deg")
    header["BPA"] = (float(widest.get("BPA", 0.0)), "restoring beam position angle, deg")
    header["TIMESYS"] = "UTC"
    header["DATE-OBS"] = _iso(date_obs)
    header["DATE-END"] = _iso(date_end)
    header["MJD-OBS"] = Time(date_obs).mjd
    header["MJD-END"] = Time(date_end).mjd
    header["TELESCOP"] = "DSA-110"
    if "FREQ" in widest:
        header["FREQ"] = (float(widest["FREQ"]), "reference frequency of the tiles, Hz")
    header["PBCUT"] = (pb_cutoff, "blank where sqrt(sum B^2) is below this")
    header["PEAK"] = (peak, "brightest pixel, Jy/beam")
    header["RMS"] = (rms, "robust (MAD) rms of valid pixels, Jy/beam")
    header["NTILES"] = (len(tiles), "tiles combined")
    header["NMEMBERS"] = (len(members), "member observations")
    for index, member in enumerate(members, start=1):
        header[f"MEMBER{index:02d}"] = member
    header["HISTORY"] = "linear mosaic sum(B A) / sum(B^2) by reconciler.io.mosaic"
    for tile in tiles:
        header["HISTORY"] = f"tile {tile.path.name}"
    return header


def _write_fits(data: np.ndarray, header: fits.Header, partial: Path, path: Path) -> None:
    try:
        fits.PrimaryHDU(data=data, header=header).writeto(partial, overwrite=True)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _write_png(
    mosaic: np.ndarray,
    wcs: WCS,
    partial: Path,
    path: Path,
    peak: float,
    rms: float,
    date_obs: datetime,
    date_end: datetime,
    n_members: int,
) -> None:
    """A quicklook with RA/Dec axes; Agg canvas, no pyplot state, safe in any process."""
    ny, nx = mosaic.shape
    figure = Figure(figsize=(10.0, max(4.0, min(10.0, 10.0 * ny / nx)) + 1.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(projection=wcs)
    # asinh, linear up to ~10 rms: the noise and faint sources stay visible next to a
    # calibrator a thousand times brighter.
    vmax = max(peak, 3.0 * rms)
    stretch = AsinhStretch(a=min(1.0, 10.0 * rms / vmax))
    norm = ImageNormalize(vmin=-3.0 * rms, vmax=vmax, stretch=stretch)
    shown = axes.imshow(mosaic, origin="lower", cmap="inferno", norm=norm)
    axes.coords[0].set_axislabel("RA (ICRS)")
    axes.coords[1].set_axislabel("Dec (ICRS)")
    axes.coords.grid(color="white", alpha=0.3, linestyle="dotted")
    axes.set_title(
        f"DSA-110 {_iso(date_obs)[:19]} to {_iso(date_end)[11:19]} UTC\n"
        f"{n_members} observations, peak {peak:.3g} Jy/beam, rms {rms * 1e3:.2g} mJy/beam"
    )
    figure.colorbar(shown, ax=axes, label="Jy/beam")
    try:
        figure.savefig(partial, format="png", dpi=100)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _existing_result(
    mosaic_path: Path, weight_path: Path, png_path: Path, members: Sequence[str]
) -> MosaicResult | None:
    """Figures of a complete mosaic of these members, or None if it must be (re)built."""
    try:
        header = fits.getheader(mosaic_path)
        fits.getheader(weight_path)
        with png_path.open("rb") as handle:
            is_png = handle.read(len(_PNG_SIGNATURE)) == _PNG_SIGNATURE
    except (OSError, ValueError):
        return None
    if not is_png or any(key not in header for key in ("PEAK", "RMS", "NMEMBERS", "NTILES")):
        return None
    recorded = [header.get(f"MEMBER{index:02d}") for index in range(1, header["NMEMBERS"] + 1)]
    if recorded != list(members):
        return None
    return MosaicResult(
        path=mosaic_path,
        weight_path=weight_path,
        png_path=png_path,
        peak_jy=float(header["PEAK"]),
        rms_jy=float(header["RMS"]),
        shape=(int(header["NAXIS2"]), int(header["NAXIS1"])),
        n_tiles=int(header["NTILES"]),
    )
