"""Solve and apply calibration with CASA, fully offline, in a child process.

CASA reads its configuration when ``casatools`` is first imported and, unconfigured, tries
to download measures data. So these functions import CASA lazily, and must run in a
process started with :func:`casa_environment` merged into its environment (DESIGN §5):

    subprocess.run([sys.executable, "-m", "reconciler.io.casa", "solve", json_args],
                   env={**os.environ, **casa_environment()})

The child prints the result as one JSON line. python-casacore is deliberately not used in
that process: it bundles its own copy of the casacore libraries, and two copies in one
process is asking for trouble, so table access here goes through ``casatools.table``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.coordinates import ICRS, HADec, SkyCoord
from astropy.time import Time

from reconciler.model import Site
from reconciler.naming import attempt_path
from reconciler.sky import DSA110, airy_power, earth_location, primary_beam_fwhm_deg
from reconciler.smearing import channel_averaging_factor

_SITE_CONFIG = Path(__file__).with_name("casa_site.py")
#: Channel-rows of model visibilities rescaled at once; bounds memory to ~100 MB.
_CHUNK_CELLS = 2_000_000


#: Solving on data flagged more than this is pointless (and CASA fails obscurely).
MAX_FLAGGED_TO_SOLVE = 0.99
#: Rows of FLAG read at once when counting flags.
_FLAG_CHUNK_ROWS = 20_000


class CasaError(RuntimeError):
    """A CASA task failed or produced no usable output; the message names the MS."""


@dataclass(frozen=True)
class CalibrationResult:
    """Tables solved on one calibrator transit and how good they are.

    ``tables`` lists the tables to apply, in order (bandpass, then gain).
    """

    ms: str
    tables: tuple[str, ...]
    refant: str
    snr_median: float
    flagged_fraction: float


def casa_environment(log_file: Path | None = None) -> dict[str, str]:
    """Return the environment variables a child process needs to run CASA offline.

    Parameters
    ----------
    log_file
        Where CASA writes its log; default ``$TMPDIR/reconciler-casa.log``.

    Returns
    -------
    dict
        ``CASASITECONFIG`` (an absolute path to this package's site configuration) and,
        if given, ``RECONCILER_CASA_LOGFILE``. Merge into ``os.environ`` for the child only.
    """
    environment = {"CASASITECONFIG": str(_SITE_CONFIG.resolve())}
    if log_file is not None:
        environment["RECONCILER_CASA_LOGFILE"] = str(Path(log_file).resolve())
    return environment


def solve_calibration(
    ms: Path | str,
    *,
    calibrator_ra_deg: float,
    calibrator_dec_deg: float,
    flux_jy: float,
    spectral_index: float,
    refant: str,
    out_prefix: Path | str,
    reference_frequency_hz: float = 1.4e9,
    pointing_dec_deg: float | None = None,
    site: Site = DSA110,
    max_smearing_loss: float = 0.0,
    attempt: str = "",
) -> CalibrationResult:
    """Solve bandpass and gain tables on a calibrator transit. Run only in a CASA child.

    The model is a point source at the calibrator's position, attenuated by the 4.65 m
    Airy beam as it drifts past the meridian pointing: without the beam, the solved
    amplitudes would absorb the transit's attenuation. The model is written into a copy of
    the MS private to this attempt, so ``ms``, which other steps read meanwhile, is never
    changed. The copy holds only the parallel hands, which are all the solvers use, averaged
    in frequency as :func:`apply_calibration` averages with the same budget: the bandpass
    is solved on the channels it will be applied to.

    Parameters
    ----------
    ms
        The converted MS containing the transit.
    calibrator_ra_deg, calibrator_dec_deg
        ICRS position of the calibrator.
    flux_jy, spectral_index
        Stokes I flux density at ``reference_frequency_hz`` and spectral index.
    refant
        Reference antenna, by name as in the MS ANTENNA table.
    out_prefix
        Tables are written to ``<out_prefix>.B`` and ``<out_prefix>.G`` (replaced if
        present).
    pointing_dec_deg
        Pointing declination; default the MS phase-centre dec, which the converter sets
        to the pointing dec.
    site
        Where the array is: the beam attenuation follows the meridian pointing there.
    max_smearing_loss
        The smearing budget of :func:`apply_calibration` (0: native channels).
    attempt
        This attempt's token: its working copy and tables are private to it until the
        tables are renamed into place. Default: a fresh one.

    Returns
    -------
    CalibrationResult

    Raises
    ------
    CasaError
        If a task fails or writes no table.
    """
    from casatasks import bandpass, ft, gaincal

    ms = str(ms)
    flagged = flagged_fraction(ms)
    if flagged >= MAX_FLAGGED_TO_SOLVE:
        raise CasaError(f"{ms}: {flagged:.0%} of the visibilities are flagged; nothing to solve on")
    prefix = Path(out_prefix)
    # Everything this attempt writes, the model column included, goes into a directory of
    # its own: the converted MS is read by other steps meanwhile and is never changed.
    private = attempt_path(prefix, attempt or uuid.uuid4().hex)
    shutil.rmtree(private, ignore_errors=True)
    private.mkdir(parents=True)
    own_ms = str(private / "data.ms")
    component_list = str(private / "model.cl")
    phase_table, bandpass_table, gain_table = (str(private / name) for name in ("G0", "B", "G"))
    try:
        _average_copy(ms, own_ms, _channel_averaging_factor(ms, max_smearing_loss), "XX,YY")
        _write_point_source(
            component_list,
            calibrator_ra_deg,
            calibrator_dec_deg,
            flux_jy,
            spectral_index,
            reference_frequency_hz,
        )
        ft(vis=own_ms, complist=component_list, usescratch=True)
        dec = _phase_centre_dec_deg(own_ms) if pointing_dec_deg is None else pointing_dec_deg
        _attenuate_model_by_beam(own_ms, calibrator_ra_deg, calibrator_dec_deg, dec, site)
        # A per-integration phase solution first, so that the bandpass averages
        # coherently; only the bandpass and the final gain are applied to targets.
        gaincal(
            vis=own_ms, caltable=phase_table, solint="int", calmode="p", refant=refant, minsnr=3.0
        )
        bandpass(
            vis=own_ms,
            caltable=bandpass_table,
            solint="inf",
            combine="scan",
            refant=refant,
            solnorm=False,
            gaintable=[phase_table],
        )
        gaincal(
            vis=own_ms,
            caltable=gain_table,
            solint="inf",
            calmode="ap",
            refant=refant,
            gaintable=[bandpass_table],
        )
        for table in (bandpass_table, gain_table):
            if not Path(table).is_dir():
                raise CasaError(f"{ms}: CASA wrote no calibration table {table}")
        snr, flagged = _solution_quality(bandpass_table)
        finals = (f"{prefix}.B", f"{prefix}.G")
        for table, final in zip((bandpass_table, gain_table), finals, strict=True):
            shutil.rmtree(final, ignore_errors=True)
            os.rename(table, final)
    except RuntimeError as exc:
        raise CasaError(f"{ms}: CASA failed while solving: {exc}") from exc
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return CalibrationResult(
        ms=ms, tables=finals, refant=refant, snr_median=snr, flagged_fraction=flagged
    )


def _average_copy(ms: str, destination: str, factor: int, correlation: str = "") -> None:
    """Write ``ms`` into a new MS at ``destination``, ``factor`` adjacent channels averaged
    into one, with only the correlations ``correlation`` names (all if empty)."""
    from casatasks import mstransform

    mstransform(
        vis=ms,
        outputvis=destination,
        datacolumn="data",
        correlation=correlation,
        chanaverage=factor > 1,
        chanbin=factor,
    )


def apply_calibration(
    ms: Path | str,
    tables: Sequence[Path | str],
    out_ms: Path | str,
    *,
    max_smearing_loss: float = 0.0,
    attempt: str = "",
) -> str:
    """Average ``ms`` in frequency into ``out_ms`` and calibrate that. CASA child only.

    Adjacent channels are averaged as far as ``max_smearing_loss`` allows at the primary
    beam's half-power radius (:func:`reconciler.smearing.channel_averaging_factor`), so the
    calibrated MS is a fraction of the size of ``ms`` and imaging grids a fraction of the
    visibilities; with no budget it is a plain copy. The tables are then applied to it:
    the bandpass is smooth over the few averaged channels, so applying it after averaging
    is the same as before, to far below the noise. The calibrated visibilities are in the
    new MS's CORRECTED_DATA column. It is made under a temporary name beside ``out_ms``
    (carrying ``attempt``, this attempt's token; default a fresh one) and renamed into
    place, so ``out_ms`` exists only when it is complete; ``ms`` is never modified.

    Returns
    -------
    str
        ``out_ms``.

    Raises
    ------
    CasaError
        If averaging or applycal fails, or applycal leaves no CORRECTED_DATA column.
    """
    import casatools
    from casatasks import applycal

    out_ms = Path(out_ms)
    partial = attempt_path(out_ms, attempt or uuid.uuid4().hex)
    shutil.rmtree(partial, ignore_errors=True)
    factor = _channel_averaging_factor(str(ms), max_smearing_loss)
    table = casatools.table()
    try:
        _average_copy(str(ms), str(partial), factor)
        applycal(
            vis=str(partial),
            gaintable=[str(path) for path in tables],
            interp=["nearest,linear"] * len(tables),
            calwt=False,
            flagbackup=False,
        )
        table.open(str(partial))
        has_corrected = "CORRECTED_DATA" in table.colnames()
        table.close()
        if not has_corrected:
            raise CasaError(f"{ms}: applycal wrote no CORRECTED_DATA")
        shutil.rmtree(out_ms, ignore_errors=True)
        partial.rename(out_ms)
    finally:
        table.done()
        shutil.rmtree(partial, ignore_errors=True)
    return str(out_ms)


def _channel_averaging_factor(ms: str, max_loss: float) -> int:
    """Channels of ``ms`` that may be averaged together within ``max_loss`` (see
    :func:`apply_calibration`), from its channel layout and its antennas' positions."""
    import casatools

    table = casatools.table()
    try:
        table.open(f"{ms}/SPECTRAL_WINDOW")
        widths = np.abs(np.asarray(table.getcell("CHAN_WIDTH", 0)))
        frequencies = np.asarray(table.getcell("CHAN_FREQ", 0))
        table.close()
        table.open(f"{ms}/ANTENNA")
        positions = np.asarray(table.getcol("POSITION")).T
        table.close()
    finally:
        table.done()
    max_baseline_m = float(
        np.max(np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1))
    )
    radius_rad = math.radians(primary_beam_fwhm_deg(float(frequencies.mean())) / 2.0)
    return channel_averaging_factor(
        float(widths.max()), frequencies.size, radius_rad, max_baseline_m, max_loss
    )


def reference_antenna(ms: Path | str) -> str:
    """The first antenna of the MS's ANTENNA table: a stable, deterministic choice.

    Raises
    ------
    CasaError
        When the ANTENNA table is empty.
    """
    import casatools

    table = casatools.table()
    table.open(f"{ms}/ANTENNA")
    try:
        names = list(table.getcol("NAME"))
    finally:
        table.close()
    if not names:
        raise CasaError(f"{ms}: the ANTENNA table is empty")
    return str(names[0])


def flagged_fraction(ms: Path | str) -> float:
    """Fraction of the MS's visibilities that are flagged (0 for an MS with no rows).

    Read in row chunks through ``casatools.table`` (this runs in a CASA child).
    """
    import casatools

    table = casatools.table()
    table.open(str(ms))
    try:
        rows = table.nrows()
        flagged = total = 0
        for start in range(0, rows, _FLAG_CHUNK_ROWS):
            flags = table.getcol("FLAG", startrow=start, nrow=min(_FLAG_CHUNK_ROWS, rows - start))
            flagged += int(flags.sum())
            total += flags.size
    finally:
        table.close()
    return flagged / total if total else 0.0


def _write_point_source(
    path: str,
    ra_deg: float,
    dec_deg: float,
    flux_jy: float,
    spectral_index: float,
    reference_frequency_hz: float,
) -> None:
    import casatools

    components = casatools.componentlist()
    direction = SkyCoord(ra_deg * u.deg, dec_deg * u.deg, frame="icrs")
    components.addcomponent(
        dir=f"J2000 {direction.ra.to_string(u.hour, sep='hms', precision=6)} "
        f"{direction.dec.to_string(u.deg, sep='dms', precision=5)}",
        flux=flux_jy,
        fluxunit="Jy",
        freq=f"{reference_frequency_hz}Hz",
        shape="point",
        spectrumtype="spectral index",
        index=spectral_index,
    )
    components.rename(path)
    components.close()
    components.done()


def _phase_centre_dec_deg(ms: str) -> float:
    import casatools

    table = casatools.table()
    table.open(f"{ms}/FIELD")
    phase_dir = table.getcol("PHASE_DIR")  # casatools order: (2, 1, n_fields)
    table.close()
    table.done()
    return math.degrees(float(phase_dir[1, 0, 0]))


def _attenuate_model_by_beam(
    ms: str, ra_deg: float, dec_deg: float, pointing_dec_deg: float, site: Site
) -> None:
    """Multiply MODEL_DATA by the Airy beam towards the calibrator at each integration."""
    import casatools

    table = casatools.table()
    table.open(f"{ms}/SPECTRAL_WINDOW")
    frequencies = np.asarray(table.getcell("CHAN_FREQ", 0))
    table.close()
    table.open(ms, nomodify=False)
    try:
        times = table.getcol("TIME")
        unique_times, row_time = np.unique(times, return_inverse=True)
        separation = _separation_from_pointing(
            unique_times, ra_deg, dec_deg, pointing_dec_deg, site
        )
        beam = airy_power(separation[:, None], frequencies[None, :])  # (n_times, n_chan)
        # In row chunks: the whole column of a full observation is several GB.
        rows_per_chunk = max(1, _CHUNK_CELLS // frequencies.size)
        for start in range(0, times.size, rows_per_chunk):
            count = min(rows_per_chunk, times.size - start)
            model = table.getcol("MODEL_DATA", start, count)  # (n_pol, n_chan, n_rows)
            model *= beam[row_time[start : start + count]].T[None, :, :]
            table.putcol("MODEL_DATA", model, start, count)
    finally:
        table.close()
        table.done()


def _separation_from_pointing(
    times_mjd_s: np.ndarray, ra_deg: float, dec_deg: float, pointing_dec_deg: float, site: Site
) -> np.ndarray:
    """Angle (rad) between a source and the meridian pointing (HA 0) at each time."""
    location = earth_location(site)
    obstime = Time(times_mjd_s / 86400.0, format="mjd", scale="utc")
    pointing = SkyCoord(
        HADec(
            ha=np.zeros(times_mjd_s.size) * u.deg,
            dec=np.full(times_mjd_s.size, pointing_dec_deg) * u.deg,
            obstime=obstime,
            location=location,
        )
    ).transform_to(ICRS())
    source = SkyCoord(ra_deg * u.deg, dec_deg * u.deg, frame="icrs")
    return pointing.separation(source).rad


def _solution_quality(caltable: str) -> tuple[float, float]:
    import casatools

    table = casatools.table()
    table.open(caltable)
    snr = np.asarray(table.getcol("SNR"))
    flags = np.asarray(table.getcol("FLAG"))
    table.close()
    table.done()
    good = snr[~flags]
    return (float(np.median(good)) if good.size else 0.0, float(flags.mean()))


def check_casa(scratch: str) -> dict[str, Any]:
    """Run CASA for real on a tiny image made in ``scratch`` (a tool and a task): its
    version and the pixels the task counted (64)."""
    import casatasks
    import casatools

    image = str(Path(scratch) / "doctor.im")
    tool = casatools.image()
    try:
        tool.fromshape(image, [8, 8, 1, 1], overwrite=True)
    finally:
        tool.close()
    statistics = casatasks.imstat(imagename=image)
    return {"casa_version": casatools.version_string(), "pixels": int(statistics["npts"][0])}


def _main(argv: Sequence[str]) -> int:
    """``python -m reconciler.io.casa {solve|apply|check} '<json keyword arguments>'``."""
    if len(argv) != 2 or argv[0] not in ("solve", "apply", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    arguments: dict[str, Any] = json.loads(argv[1])
    if argv[0] == "solve":
        result: Any = asdict(solve_calibration(**arguments))
    elif argv[0] == "check":
        result = check_casa(**arguments)
    else:
        result = {"out_ms": apply_calibration(**arguments)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
