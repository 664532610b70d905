"""Simulate DSA-110 raw UVH5 files exactly as the correlator writes them (DESIGN §1).

The files are written with h5py in the layout of the correlator's own writer
(dsa110-meridian-fs ``dsamfs/io.py``): ``phase_type = "drift"``, the pointing dec in
``extra_keywords``, one spectral window whose channels run downward, and ``uvw_array``
pointing at (HA 0, Dec pointing) for every integration. Each integration is fringe-stopped
on that meridian point, so a source at sky direction ``s`` appears with the phase
``2 pi (w_s - w_0) / lambda``: pyuvdata's sign convention, in which phasing to a new centre
multiplies by ``exp(-2 pi i (w_new - w_old) / lambda)``.

Antenna gains enter as ``conj(g_1) g_2`` on the baseline (ant_1, ant_2): pyuvdata's
baseline is ``ant_2 - ant_1`` with ``V = <A* B>``, and ``write_ms`` conjugates the data by
default, so CASA then sees ``g_1 conj(g_2)``, its own convention, and solves back ``g``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
from astropy.coordinates import EarthLocation
from astropy.time import Time
from pyuvdata.utils import ECEF_from_ENU, XYZ_from_LatLonAlt
from pyuvdata.utils.phasing import calc_app_coords, calc_uvw
from pyuvdata.utils.times import get_lst_for_time

from reconciler.sky import (
    DISH_DIAMETER_M,
    SITE_HEIGHT_M,
    SITE_LATITUDE_DEG,
    SITE_LONGITUDE_DEG,
    SPEED_OF_LIGHT_M_S,
    airy_power,
)

INTEGRATION_S = 12.885
INTEGRATIONS_PER_OBSERVATION = 24
BAND_TOP_HZ = 1499.0e6
BAND_BOTTOM_HZ = 1311.0e6
N_SUBBANDS_FULL = 16
SUBBAND_SPAN_HZ = (BAND_TOP_HZ - BAND_BOTTOM_HZ) / N_SUBBANDS_FULL
REFERENCE_FREQUENCY_HZ = 1.4e9

#: AIPS memo 117 codes, in the correlator's order (dsamfs/io.py).
POLARIZATION_CODES = {2: (-5, -6), 4: (-5, -7, -8, -6)}
POLARIZATION_NAMES = {-5: "XX", -6: "YY", -7: "XY", -8: "YX"}

_SECONDS_PER_DAY = 86400.0
_N_ANTENNAS_FULL = 110


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


def subband_frequencies(subband: int, channels_per_subband: int) -> np.ndarray:
    """Return the channel centres of one subband in file order (descending), Hz.

    Subband 0 holds the top of 1311–1499 MHz; each subband spans 1/16 of the band
    whatever its channel count.
    """
    width = SUBBAND_SPAN_HZ / channels_per_subband
    top = BAND_TOP_HZ - subband * SUBBAND_SPAN_HZ
    return top - (np.arange(channels_per_subband) + 0.5) * width


def dsa110_like_enu(n_antennas: int, array_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Return (full-array indices, ENU positions in metres) for a T-shaped array subset.

    The full array has 110 dishes: 62 on a 2.5 km east-west arm and 48 on a 1.5 km arm
    running south from its middle. The subset takes evenly spaced indices so both arms
    are always represented; it is deterministic. ``array_scale`` shrinks (or stretches)
    the layout: a compact array has coarser resolution and so images with fewer pixels,
    which is what keeps the demo quick.
    """
    if not 3 <= n_antennas <= _N_ANTENNAS_FULL:
        raise ValueError(f"n_antennas must be between 3 and {_N_ANTENNAS_FULL}")
    n_east_west = 62
    east = np.linspace(-1250.0, 1250.0, n_east_west)
    # A small fixed irregularity breaks the perfect spacing, as real pads do.
    east = east + 3.0 * np.sin(np.arange(n_east_west) * 1.7)
    north = -np.linspace(40.0, 1500.0, _N_ANTENNAS_FULL - n_east_west)
    full = np.concatenate(
        [
            np.column_stack([east, np.zeros(n_east_west), np.zeros(n_east_west)]),
            np.column_stack([np.zeros(north.size), north, np.zeros(north.size)]),
        ]
    )
    indices = np.unique(np.round(np.linspace(0, _N_ANTENNAS_FULL - 1, n_antennas)).astype(int))
    return indices, full[indices] * array_scale


def make_gains(
    rng: np.random.Generator,
    n_antennas: int,
    frequencies_hz: np.ndarray,
    amplitude_scatter: float,
    phase_scatter_deg: float,
) -> np.ndarray:
    """Return smooth bandpass gains, shape (n_antennas, n_frequencies, 2 feeds).

    Each antenna feed gets an amplitude, a phase, a delay of up to a nanosecond and a
    gentle ripple across the band: smooth in frequency, constant in time.
    """
    shape = (n_antennas, 1, 2)
    amplitude = 1.0 + amplitude_scatter * rng.standard_normal(shape)
    phase = np.radians(phase_scatter_deg) * rng.standard_normal(shape)
    delay_s = 1e-9 * rng.uniform(-1.0, 1.0, shape)
    ripple_phase = rng.uniform(0.0, 2 * np.pi, shape)
    relative = (frequencies_hz[None, :, None] - REFERENCE_FREQUENCY_HZ) / (
        BAND_TOP_HZ - BAND_BOTTOM_HZ
    )
    amplitude = amplitude * (1.0 + 0.05 * np.sin(2 * np.pi * 1.3 * relative + ripple_phase))
    phase = (
        phase
        + 2 * np.pi * delay_s * (frequencies_hz[None, :, None] - REFERENCE_FREQUENCY_HZ)
        + 0.1 * np.cos(2 * np.pi * 0.8 * relative + ripple_phase)
    )
    return amplitude * np.exp(1j * phase)


@dataclass(frozen=True)
class _Array:
    """The simulated array: telescope location and antenna layout."""

    location: EarthLocation
    numbers: np.ndarray
    names: np.ndarray
    positions_ecef: np.ndarray  # relative to the telescope location
    ant_1: np.ndarray  # per baseline, autos included, ant_1 <= ant_2
    ant_2: np.ndarray


def _make_array(n_antennas: int, array_scale: float) -> _Array:
    indices, enu = dsa110_like_enu(n_antennas, array_scale)
    lat, lon = math.radians(SITE_LATITUDE_DEG), math.radians(SITE_LONGITUDE_DEG)
    absolute = ECEF_from_ENU(enu, latitude=lat, longitude=lon, altitude=SITE_HEIGHT_M)
    centre = XYZ_from_LatLonAlt(lat, lon, SITE_HEIGHT_M)
    numbers = np.arange(len(indices))
    ant_1, ant_2 = np.triu_indices(len(indices))
    return _Array(
        location=EarthLocation.from_geodetic(SITE_LONGITUDE_DEG, SITE_LATITUDE_DEG, SITE_HEIGHT_M),
        numbers=numbers,
        names=np.array([f"{index + 1}" for index in indices]),
        positions_ecef=absolute - centre,
        ant_1=numbers[ant_1],
        ant_2=numbers[ant_2],
    )


@dataclass(frozen=True)
class _Geometry:
    """Per baseline-time geometry of one observation, shared by all its subbands."""

    times_jd: np.ndarray  # (n_blts,)
    lst_rad: np.ndarray
    uvw_pointing: np.ndarray  # (n_blts, 3), towards (HA 0, Dec pointing)
    source_delay_m: list[np.ndarray]  # per source (n_blts,), w_source - w_pointing
    source_separation_rad: list[np.ndarray]  # per source (n_blts,), from the pointing


def _observation_geometry(
    array: _Array,
    first_centre_jd: float,
    n_integrations: int,
    integration_s: float,
    dec_rad: float,
    sources: Sequence[PointSource],
) -> _Geometry:
    n_baselines = array.ant_1.size
    centres = first_centre_jd + np.arange(n_integrations) * integration_s / _SECONDS_PER_DAY
    times = np.repeat(centres, n_baselines)
    ant_1 = np.tile(array.ant_1, n_integrations)
    ant_2 = np.tile(array.ant_2, n_integrations)
    lst = get_lst_for_time(times, telescope_loc=array.location)

    def uvw_towards(app_ra: np.ndarray, app_dec: np.ndarray) -> np.ndarray:
        return calc_uvw(
            app_ra=app_ra,
            app_dec=app_dec,
            frame_pa=np.zeros_like(app_ra),
            lst_array=lst,
            use_ant_pos=True,
            antenna_positions=array.positions_ecef,
            antenna_numbers=array.numbers,
            ant_1_array=ant_1,
            ant_2_array=ant_2,
            telescope_lat=array.location.lat.rad,
            telescope_lon=array.location.lon.rad,
        )

    # The meridian point at the pointing dec: apparent RA = local apparent sidereal time.
    pointing_dec = np.full_like(lst, dec_rad)
    uvw_pointing = uvw_towards(lst, pointing_dec)
    delays, separations = [], []
    for source in sources:
        app_ra, app_dec = calc_app_coords(
            lon_coord=math.radians(source.ra_deg),
            lat_coord=math.radians(source.dec_deg),
            coord_frame="icrs",
            time_array=times,
            lst_array=lst,
            telescope_loc=array.location,
        )
        delays.append(uvw_towards(app_ra, app_dec)[:, 2] - uvw_pointing[:, 2])
        separations.append(_great_circle(app_ra, app_dec, lst, pointing_dec))
    return _Geometry(times, lst, uvw_pointing, delays, separations)


def _great_circle(
    ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray
) -> np.ndarray:
    cos_sep = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra1 - ra2)
    return np.arccos(np.clip(cos_sep, -1.0, 1.0))


def _subband_visibilities(
    array: _Array,
    geometry: _Geometry,
    sources: Sequence[PointSource],
    frequencies: np.ndarray,
    gains: np.ndarray,
    polarizations: Sequence[int],
    noise_jy: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Return visibilities (n_blts, n_channels, n_pols) in pyuvdata's convention."""
    n_blts = geometry.times_jd.size
    sky = np.zeros((n_blts, frequencies.size), dtype=np.complex128)
    for source, delay, separation in zip(
        sources, geometry.source_delay_m, geometry.source_separation_rad, strict=True
    ):
        beam = airy_power(separation[:, None], frequencies[None, :], DISH_DIAMETER_M)
        phase = 2 * np.pi * delay[:, None] * frequencies[None, :] / SPEED_OF_LIGHT_M_S
        sky += source.flux_at(frequencies)[None, :] * beam * np.exp(1j * phase)

    n_integrations = n_blts // array.ant_1.size
    ant_1 = np.tile(array.ant_1, n_integrations)
    ant_2 = np.tile(array.ant_2, n_integrations)
    data = np.zeros((n_blts, frequencies.size, len(polarizations)), dtype=np.complex128)
    for index, code in enumerate(polarizations):
        feeds = POLARIZATION_NAMES[code]
        first = gains[ant_1, :, "XY".index(feeds[0])]
        second = gains[ant_2, :, "XY".index(feeds[1])]
        # An unpolarised source: XX = YY = I, the cross-hands see none of it.
        signal = sky if feeds[0] == feeds[1] else np.zeros_like(sky)
        data[:, :, index] = np.conj(first) * second * signal
    cross = ant_1 != ant_2
    if noise_jy > 0:
        noise = rng.standard_normal(data.shape) + 1j * rng.standard_normal(data.shape)
        data[cross] += noise_jy * noise[cross]
    # Autocorrelations must be real; give them the total power they would see.
    data[~cross] = np.abs(data[~cross])
    return data.astype(np.complex64)


def _write_raw_file(
    path: Path,
    array: _Array,
    geometry: _Geometry,
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

    Returns
    -------
    SimulationTruth
        Also written to ``out_dir / "truth.json"``.
    """
    if n_pols not in POLARIZATION_CODES:
        raise ValueError("n_pols must be 2 or 4")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    subbands = tuple(range(n_subbands)) if subbands is None else tuple(subbands)
    array = _make_array(n_antennas, array_scale)
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
    files: list[Path] = []
    starts: list[datetime] = []
    for observation in range(n_observations):
        data_start = start + timedelta(seconds=observation * observation_s)
        starts.append(data_start)
        first_centre = Time(data_start).jd + integration_s / 2.0 / _SECONDS_PER_DAY
        geometry = _observation_geometry(
            array, first_centre, integrations_per_observation, integration_s, dec_rad, sources
        )
        for subband in subbands:
            frequencies = subband_frequencies(subband, channels_per_subband)
            columns = np.searchsorted(all_frequencies, frequencies)
            visibilities = _subband_visibilities(
                array,
                geometry,
                sources,
                frequencies,
                gains[:, columns, :],
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
