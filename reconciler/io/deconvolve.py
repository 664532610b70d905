"""Deconvolve one MS on a given grid with tclean or WSClean; the restored image as FITS.

:func:`reconciler.io.imaging.image_measurement_set` decides the grid and the w-planes
from the data and hands a :class:`DeconvolutionJob` to one of two backends:

* ``tclean`` in ``python -m reconciler.io.deconvolve tclean '<json>'``, started with
  :func:`reconciler.io.casa.casa_environment` (CASA offline, DESIGN §5). CASA is never
  imported into the calling process.
* ``wsclean`` (the default backend; the binary must be on ``PATH``): one thread, the
  w-gridder, one clean run and a restoration. At the full DSA-110 shape it costs a fifth
  of tclean's CPU.

The CASA child imports this module, so it must not import python-casacore: that bundles
its own copy of the casacore libraries, and two copies in one process is asking for
trouble.

The restoring beam is fixed to a circle with the area of the fitted PSF beam (DESIGN §5):
the snapshot PSF is far from Gaussian and its fit can be very elongated, which would make
every tile, and the mosaic built from them, have a different and odd beam.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits

from reconciler.io.casa import casa_environment
from reconciler.io.processes import dying_with_this_process

#: Briggs robustness: between natural (broad beam) and uniform (high sidelobes).
ROBUST = 0.0
#: tclean's default cyclefactor (1) on a snapshot PSF, whose sidelobes reach ~0.8, ends a
#: minor cycle after a handful of components: ~30 major cycles. 0.25 needs ~5, and gave
#: the same fluxes to 0.5 % on simulated snapshots.
CYCLE_FACTOR = 0.25
#: WSClean's threads: one, like every tool (the service's parallelism is its workers), so
#: that two workers on two cores image two observations at once without contending.
WSCLEAN_THREADS = 1


class DeconvolutionError(RuntimeError):
    """A backend failed, timed out or wrote no image; the message names the MS."""


@dataclass(frozen=True)
class DeconvolutionJob:
    """One deconvolution job, as plain data so that it crosses to a child as JSON."""

    ms: str
    workdir: str
    data_column: str
    size: int
    cell_arcsec: float
    w_planes: int
    niter: int
    threshold_jy: float
    restoring_beam: tuple[float, float, float] | None


@dataclass(frozen=True)
class DeconvolutionOutcome:
    """What a backend leaves behind: a restored image FITS and figures."""

    image_fits: str
    psf_beam: tuple[float, float, float]
    restoring_beam: tuple[float, float, float]
    rms_jy: float
    cell_arcsec: float
    size: int


def circular_beam(major_arcsec: float, minor_arcsec: float) -> tuple[float, float, float]:
    """Return the circular beam (FWHM, FWHM, 0) with the area of an elliptical one."""
    fwhm = round(math.sqrt(major_arcsec * minor_arcsec), 3)
    return fwhm, fwhm, 0.0


def run_tclean_child(job: DeconvolutionJob, timeout_s: float) -> DeconvolutionOutcome:
    """Run tclean on ``job`` in a child process with CASA's offline environment.

    Raises
    ------
    DeconvolutionError
        If the child fails or takes longer than ``timeout_s`` seconds.
    """
    log = Path(job.workdir) / "casa.log"
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "reconciler.io.deconvolve", "tclean", json.dumps(asdict(job))],
            env={**os.environ, **casa_environment(log)},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=job.workdir,
            preexec_fn=dying_with_this_process(),
        )
    except subprocess.TimeoutExpired as exc:
        raise DeconvolutionError(f"{job.ms}: tclean took longer than {timeout_s:.0f} s") from exc
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise DeconvolutionError(
            f"{job.ms}: tclean child failed (exit {completed.returncode}): "
            f"{completed.stderr[-2000:]}"
        )
    reply = json.loads(lines[-1])
    return DeconvolutionOutcome(**{**reply, "psf_beam": tuple(reply["psf_beam"])})


def run_wsclean(job: DeconvolutionJob, timeout_s: float) -> DeconvolutionOutcome:
    """Image with WSClean: one clean run, then a restoration with the circular beam.

    The clean run grids with the w-gridder, which corrects the w term itself to the
    gridder's accuracy, so ``job.w_planes`` is not needed. It fits the PSF's beam; unless
    ``job.restoring_beam`` fixes one, the model is then restored onto the residual with
    the circular beam of the same area (:func:`circular_beam`), which needs no gridding.

    Raises
    ------
    DeconvolutionError
        If a WSClean run fails or takes longer than ``timeout_s`` seconds.
    """
    name = str(Path(job.workdir) / "tile")
    clean = [
        "wsclean",
        "-name",
        name,
        "-temp-dir",
        job.workdir,
        "-j",
        str(WSCLEAN_THREADS),
        "-size",
        str(job.size),
        str(job.size),
        "-scale",
        f"{job.cell_arcsec}asec",
        "-weight",
        "briggs",
        str(ROBUST),
        "-pol",
        "I",
        "-data-column",
        job.data_column,
        "-use-wgridder",
        # The MODEL_DATA column is never read again: writing it would cost a full
        # prediction and a column as large as the data.
        "-no-update-model-required",
        "-no-dirty",
        "-niter",
        str(job.niter),
        "-threshold",
        str(job.threshold_jy),
        "-mgain",
        "0.8",
        # Without a mask WSClean does not converge on a snapshot PSF (DESIGN §5).
        "-auto-mask",
        "3",
    ]
    if job.restoring_beam is not None:
        beam = job.restoring_beam
        clean += ["-beam-shape", f"{beam[0]}asec", f"{beam[1]}asec", f"{beam[2]}deg"]
    _run_command([*clean, job.ms], job.ms, timeout_s)
    psf_beam = _fits_beam(f"{name}-psf.fits")
    image = f"{name}-image.fits"
    if job.restoring_beam is None:
        beam = circular_beam(psf_beam[0], psf_beam[1])
        image = f"{name}-circular-image.fits"
        restore = [
            "wsclean",
            "-beam-shape",
            f"{beam[0]}asec",
            f"{beam[1]}asec",
            f"{beam[2]}deg",
            "-restore",
            f"{name}-residual.fits",
            f"{name}-model.fits",
            image,
        ]
        _run_command(restore, job.ms, timeout_s)
    with fits.open(f"{name}-residual.fits") as hdus:
        rms = _robust_rms(np.asarray(hdus[0].data))
    return DeconvolutionOutcome(
        image_fits=image,
        psf_beam=psf_beam,
        restoring_beam=tuple(beam),
        rms_jy=rms,
        cell_arcsec=job.cell_arcsec,
        size=job.size,
    )


def _tclean(job: DeconvolutionJob) -> DeconvolutionOutcome:
    """Clean, restore with a fixed beam, export FITS. Runs only in a CASA child."""
    import casatools
    from casatasks import exportfits, tclean

    imagename = str(Path(job.workdir) / "tile")
    common: dict[str, Any] = {
        "vis": job.ms,
        "imagename": imagename,
        "datacolumn": "corrected" if job.data_column == "CORRECTED_DATA" else "data",
        "imsize": [job.size, job.size],
        "cell": f"{job.cell_arcsec}arcsec",
        "stokes": "I",
        "specmode": "mfs",
        "gridder": "wproject",
        "wprojplanes": job.w_planes,
        "deconvolver": "hogbom",
        "weighting": "briggs",
        "robust": ROBUST,
        "cyclefactor": CYCLE_FACTOR,
        # No CASA primary beam: it knows no DSA-110 dish; ours is written by the parent.
        "pblimit": -1.0,
    }
    tclean(
        **common,
        niter=job.niter,
        threshold=f"{job.threshold_jy}Jy",
        restoration=False,
    )
    image = casatools.image()
    try:
        image.open(f"{imagename}.psf")
        psf_beam = _beam_tuple(image.restoringbeam())
        image.close()
        beam = job.restoring_beam or circular_beam(psf_beam[0], psf_beam[1])
        # Restoration only: reuses the model and residual, no gridding.
        tclean(
            **common,
            niter=0,
            calcpsf=False,
            calcres=False,
            restart=True,
            restoration=True,
            restoringbeam=[f"{beam[0]}arcsec", f"{beam[1]}arcsec", f"{beam[2]}deg"],
        )
        image.open(f"{imagename}.residual")
        rms = _robust_rms(np.asarray(image.getchunk()))
        image.close()
    finally:
        image.done()
    if not Path(f"{imagename}.image").is_dir():
        raise DeconvolutionError(f"{job.ms}: tclean wrote no restored image")
    fits_path = str(Path(job.workdir) / "tile.image.fits")
    exportfits(imagename=f"{imagename}.image", fitsimage=fits_path, dropdeg=True, overwrite=True)
    return DeconvolutionOutcome(
        image_fits=fits_path,
        psf_beam=psf_beam,
        restoring_beam=tuple(beam),
        rms_jy=rms,
        cell_arcsec=job.cell_arcsec,
        size=job.size,
    )


def _beam_tuple(beam: dict[str, Any]) -> tuple[float, float, float]:
    """(major arcsec, minor arcsec, PA deg) from a casatools beam record."""
    major = (beam["major"]["value"] * u.Unit(beam["major"]["unit"])).to_value(u.arcsec)
    minor = (beam["minor"]["value"] * u.Unit(beam["minor"]["unit"])).to_value(u.arcsec)
    angle = (beam["positionangle"]["value"] * u.Unit(beam["positionangle"]["unit"])).to_value(u.deg)
    return float(major), float(minor), float(angle)


def _run_command(command: list[str], ms: str, timeout_s: float) -> None:
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            preexec_fn=dying_with_this_process(),
        )
    except subprocess.TimeoutExpired as exc:
        raise DeconvolutionError(f"{ms}: {command[0]} took longer than {timeout_s:.0f} s") from exc
    if completed.returncode != 0:
        raise DeconvolutionError(
            f"{ms}: {command[0]} failed (exit {completed.returncode}): {completed.stderr[-2000:]}"
        )


def _fits_beam(path: str) -> tuple[float, float, float]:
    header = fits.getheader(path)
    return header["BMAJ"] * 3600.0, header["BMIN"] * 3600.0, float(header["BPA"])


def _robust_rms(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(finite - np.median(finite))))


def _main(argv: Sequence[str]) -> int:
    """``python -m reconciler.io.deconvolve tclean '<json job>'``: print the outcome as JSON."""
    if len(argv) != 2 or argv[0] != "tclean":
        print(_main.__doc__, file=sys.stderr)
        return 2
    arguments = json.loads(argv[1])
    if arguments["restoring_beam"] is not None:
        arguments["restoring_beam"] = tuple(arguments["restoring_beam"])
    print(json.dumps(asdict(_tclean(DeconvolutionJob(**arguments)))))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
