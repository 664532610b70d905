"""Simulate DSA-110 raw UVH5 files exactly as the correlator writes them (DESIGN §1).

The files are written with h5py in the layout of the correlator's own writer
(dsa110-meridian-fs ``dsamfs/io.py``): ``phase_type = "drift"``, the pointing dec in
``extra_keywords``, one spectral window whose channels run downward, and ``uvw_array``
pointing at (HA 0, Dec pointing) for every integration. What the array sees, and the sign
conventions of phases and gains, is :mod:`reconciler.io.simulated_visibilities`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
from astropy.time import Time

from reconciler.io.simulated_visibilities import (
    POLARIZATION_CODES,
    REFERENCE_FREQUENCY_HZ,
    SUBBAND_SPAN_HZ,
    ObservationGeometry,
    SimulatedArray,
    make_array,
    make_gains,
    observation_geometry,
    subband_frequencies,
    subband_visibilities,
)
from reconciler.sky import DISH_DIAMETER_M, SITE_HEIGHT_M, SITE_LATITUDE_DEG, SITE_LONGITUDE_DEG

INTEGRATION_S = 12.885
INTEGRATIONS_PER_OBSERVATION = 24

_SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class PointSource:
    """An unpolarised point source; ``flux_jy`` is Stokes I at 1.4 GHz."""

    name: str
    ra_deg: float
    dec_deg: float
    flux_jy: float
    spectral_index: float = 0.0

    def flux_at(self, frequency_hz: np.ndarray) -> np.ndarray:
        """Return the flux density in Jy at each frequency."""
        return self.flux_jy * (np.asarray(frequency_hz) / REFERENCE_FREQUENCY_HZ) ** (
            self.spectral_index
        )


@dataclass(frozen=True)
class SimulationTruth:
    """What the simulator put into the files, for tests to compare against.

    ``gains`` has shape (n_antennas, n_frequencies, 2): the X and Y feed gains of each
    antenna (ordered as ``antenna_numbers``) at each of ``frequencies_hz`` (ascending).
    """

    pointing_dec_deg: float
    sources: tuple[PointSource, ...]
    antenna_numbers: tuple[int, ...]
    antenna_names: tuple[str, ...]
    frequencies_hz: np.ndarray
    gains: np.ndarray
    files: tuple[Path, ...]
    observation_starts: tuple[datetime, ...]

    def to_json(self) -> str:
        """Serialise to JSON (complex gains as separate real and imaginary lists)."""
        return json.dumps(
            {
                "pointing_dec_deg": self.pointing_dec_deg,
                "sources": [asdict(source) for source in self.sources],
                "antenna_numbers": list(self.antenna_numbers),
                "antenna_names": list(self.antenna_names),
                "frequencies_hz": self.frequencies_hz.tolist(),
                "gains_real": self.gains.real.tolist(),
                "gains_imag": self.gains.imag.tolist(),
                "files": [str(path) for path in self.files],
                "observation_starts": [when.isoformat() for when in self.observation_starts],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> SimulationTruth:
        """Rebuild a truth object written by :meth:`to_json`."""
        raw = json.loads(text)
        return cls(
            pointing_dec_deg=raw["pointing_dec_deg"],
            sources=tuple(PointSource(**source) for source in raw["sources"]),
            antenna_numbers=tuple(raw["antenna_numbers"]),
            antenna_names=tuple(raw["antenna_names"]),
            frequencies_hz=np.asarray(raw["frequencies_hz"]),
            gains=np.asarray(raw["gains_real"]) + 1j * np.asarray(raw["gains_imag"]),
            files=tuple(Path(path) for path in raw["files"]),
            observation_starts=tuple(datetime.fromisoformat(w) for w in raw["observation_starts"]),
        )


def equivalent_sefd_jy(
    noise_jy: float, channels_per_subband: int = 8, integration_s: float = INTEGRATION_S
) -> float:
    """The SEFD (at correlator efficiency 1) whose radiometer noise per visibility is the
    simulator's ``noise_jy`` on each of its real and imaginary parts: σ = SEFD / sqrt(2 Δν τ),
    with Δν the channel width and τ the integration time."""
    return noise_jy * math.sqrt(2.0 * SUBBAND_SPAN_HZ / channels_per_subband * integration_s)


def write_reference_catalogue(
    path: Path, sources: Iterable[PointSource], frequency_hz: float = 1.4e9
) -> Path:
    """Write ``sources`` as a reference catalogue for the quality assessment: a CSV of
    name, RA, Dec (deg) and flux density (Jy) at ``frequency_hz``, the truth the
    simulated data hold."""
    rows = (
        f"{s.name},{s.ra_deg!r},{s.dec_deg!r},{float(s.flux_at(np.array([frequency_hz]))[0])!r}\n"
        for s in sources
    )
    path.write_text("name,ra_deg,dec_deg,flux_jy\n" + "".join(rows))
    return path


def calibrator_field_sources() -> tuple[PointSource, ...]:
    """Return 0834+555 (VLA calibrator list, 20 cm) and two fainter field sources.

    The fainter ones are invented, placed within a degree of the calibrator so that a
    mosaic of the dec ≈ 55.57° strip has more than one source to find. The calibrator is
    flat-spectrum: the catalogue holds only its 20 cm flux, so the pipeline's calibration
    model is flat, and the simulated sky must agree with the model for fluxes to come out.
    """
    calibrator_ra = (8 + 34 / 60 + 54.904 / 3600) * 15.0
    calibrator_dec = 55 + 34 / 60 + 21.07 / 3600
    return (
        PointSource("0834+555", calibrator_ra, calibrator_dec, 8.8, 0.0),
        PointSource("field-a", calibrator_ra + 1.2, calibrator_dec + 0.6, 1.5, -0.7),
        PointSource("field-b", calibrator_ra - 1.5, calibrator_dec - 0.4, 0.8, -0.9),
    )


def _write_raw_file(
    path: Path,
    array: SimulatedArray,
    geometry: ObservationGeometry,
    frequencies: np.ndarray,
    polarizations: Sequence[int],
    integration_s: float,
    dec_rad: float,
    visibilities: np.ndarray,
) -> None:
    """Write one subband file in the layout of dsamfs/io.py, via a temporary name."""
    n_blts, n_channels, n_pols = visibilities.shape
    n_antennas = array.numbers.size
    partial = path.with_name(path.stem + "_incomplete.hdf5")
    with h5py.File(partial, "w") as handle:
        header = handle.create_group("Header")
        header["latitude"] = SITE_LATITUDE_DEG
        header["longitude"] = SITE_LONGITUDE_DEG
        header["altitude"] = SITE_HEIGHT_M
        header["telescope_name"] = np.bytes_("OVRO_MMA")
        header["instrument"] = np.bytes_("DSA")
        header["object_name"] = np.bytes_("search")
        header["history"] = np.bytes_("written by reconciler.io.simulator")
        header["phase_type"] = np.bytes_("drift")
        header["Nants_data"] = n_antennas
        header["Nants_telescope"] = n_antennas
        header["antenna_diameters"] = np.full(n_antennas, DISH_DIAMETER_M)
        header["ant_1_array"] = np.tile(array.ant_1, n_blts // array.ant_1.size)
        header["ant_2_array"] = np.tile(array.ant_2, n_blts // array.ant_2.size)
        header["antenna_names"] = array.names.astype("S4")
        header["antenna_numbers"] = array.numbers
        header["Nbls"] = array.ant_1.size
        header["Nblts"] = n_blts
        header["Nfreqs"] = n_channels
        header["Npols"] = n_pols
        header["Ntimes"] = n_blts // array.ant_1.size
        header["Nspws"] = 1
        header["uvw_array"] = geometry.uvw_pointing
        header["time_array"] = geometry.times_jd
        header["integration_time"] = np.full(n_blts, integration_s)
        header["freq_array"] = frequencies[np.newaxis, :]
        header["channel_width"] = float(np.abs(np.median(np.diff(frequencies))))
        header["spw_array"] = np.array([1])
        header["polarization_array"] = np.array(polarizations)
        header["antenna_positions"] = array.positions_ecef
        extra = header.create_group("extra_keywords")
        extra["phase_center_dec"] = dec_rad
        extra["ha_phase_center"] = 0.0
        extra["phase_center_epoch"] = np.bytes_("HADEC")
        data = handle.create_group("Data")
        data["visdata"] = visibilities[:, np.newaxis, :, :]
        data["flags"] = np.zeros((n_blts, 1, n_channels, n_pols), dtype=bool)
        data["nsamples"] = np.ones((n_blts, 1, n_channels, n_pols), dtype=np.float32)
    partial.rename(path)


def raw_file_name(when: datetime, subband: int) -> str:
    """Return the correlator's name for a subband file whose name time is ``when``."""
    return f"{when.astimezone(UTC):%Y-%m-%dT%H:%M:%S}_sb{subband:02d}.hdf5"


def simulate_observations(
    out_dir: Path,
    start: datetime,
    minutes: float,
    dec_deg: float,
    *,
    sources: Sequence[PointSource] = (),
    subbands: Sequence[int] | None = None,
    n_subbands: int = 4,
    n_antennas: int = 10,
    array_scale: float = 1.0,
    channels_per_subband: int = 8,
    integrations_per_observation: int = INTEGRATIONS_PER_OBSERVATION,
    integration_s: float = INTEGRATION_S,
    n_pols: int = 2,
    seed: int = 0,
    gain_amplitude_scatter: float = 0.1,
    gain_phase_scatter_deg: float = 30.0,
    noise_jy: float = 0.0,
    name_jitter_s: float = 0.0,
    gain_errors: Mapping[int, float] | None = None,
) -> SimulationTruth:
    """Write raw DSA-110 UVH5 files for consecutive observations and return the truth.

    Parameters
    ----------
    out_dir
        Directory for the ``YYYY-MM-DDTHH:MM:SS_sbNN.hdf5`` files and ``truth.json``.
    start
        UTC start of the first observation's data (edge of its first integration).
    minutes
        Length of sky to cover; rounded up to whole observations of
        ``integrations_per_observation * integration_s`` seconds (~5.15 min by default).
    dec_deg
        Pointing declination (the dec strip), degrees.
    sources
        Point sources on the sky; none by default (see :func:`calibrator_field_sources`).
    subbands
        Subband indices to write (0 is the top of the band); default ``range(n_subbands)``.
    n_antennas, channels_per_subband, n_pols
        Array and correlator shape; every subband spans 11.75 MHz whatever its channels.
    array_scale
        Size of the array relative to DSA-110's (1.0: 2.5 km by 1.5 km).
    seed
        Seeds the gains, the noise and the name jitter.
    gain_amplitude_scatter, gain_phase_scatter_deg
        Spread of the per-antenna-feed gain amplitude (fraction) and phase (degrees);
        zero for both gives unity gains.
    noise_jy
        Standard deviation of the Gaussian noise per real and imaginary part, Jy.
    name_jitter_s
        File names of one observation differ from the data start by up to this many
        seconds (the data still share their start time), as the real correlator's do.

    gain_errors
        Observation index → a factor on every antenna's gain in that observation only: a
        wrong gain the calibrator's solution does not know of (its visibilities are scaled
        by the factor squared), for tests of the quality assessment.

    Returns
    -------
    SimulationTruth
        Also written to ``out_dir / "truth.json"`` (``gains`` without ``gain_errors``).
    """
    if n_pols not in POLARIZATION_CODES:
        raise ValueError("n_pols must be 2 or 4")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    subbands = tuple(range(n_subbands)) if subbands is None else tuple(subbands)
    array = make_array(n_antennas, array_scale)
    polarizations = POLARIZATION_CODES[n_pols]
    dec_rad = math.radians(dec_deg)
    all_frequencies = np.sort(
        np.concatenate([subband_frequencies(s, channels_per_subband) for s in subbands])
    )
    gains = make_gains(
        rng, array.numbers.size, all_frequencies, gain_amplitude_scatter, gain_phase_scatter_deg
    )
    if gain_amplitude_scatter == 0 and gain_phase_scatter_deg == 0:
        gains = np.ones_like(gains)

    observation_s = integrations_per_observation * integration_s
    n_observations = max(1, math.ceil(minutes * 60.0 / observation_s - 1e-9))
    positions = [(source.ra_deg, source.dec_deg) for source in sources]
    files: list[Path] = []
    starts: list[datetime] = []
    for observation in range(n_observations):
        data_start = start + timedelta(seconds=observation * observation_s)
        starts.append(data_start)
        first_centre = Time(data_start).jd + integration_s / 2.0 / _SECONDS_PER_DAY
        geometry = observation_geometry(
            array, first_centre, integrations_per_observation, integration_s, dec_rad, positions
        )
        for subband in subbands:
            frequencies = subband_frequencies(subband, channels_per_subband)
            columns = np.searchsorted(all_frequencies, frequencies)
            visibilities = subband_visibilities(
                array,
                geometry,
                [source.flux_at(frequencies) for source in sources],
                frequencies,
                gains[:, columns, :] * (gain_errors or {}).get(observation, 1.0),
                polarizations,
                noise_jy,
                rng,
            )
            jitter = timedelta(seconds=float(rng.uniform(0.0, name_jitter_s)))
            path = out_dir / raw_file_name(data_start + jitter, subband)
            _write_raw_file(
                path,
                array,
                geometry,
                frequencies,
                polarizations,
                integration_s,
                dec_rad,
                visibilities,
            )
            files.append(path)

    truth = SimulationTruth(
        pointing_dec_deg=dec_deg,
        sources=tuple(sources),
        antenna_numbers=tuple(int(n) for n in array.numbers),
        antenna_names=tuple(str(n) for n in array.names),
        frequencies_hz=all_frequencies,
        gains=gains,
        files=tuple(files),
        observation_starts=tuple(starts),
    )
    (out_dir / "truth.json").write_text(truth.to_json())
    return truth
