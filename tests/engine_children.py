"""The child-process side of the test actions (:mod:`tests.engine_actions`): what a test
action does in its own process. Kept apart, with light imports, because every test action
starts a Python process that imports this module.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError, TemporaryError
from reconciler.naming import parse_target

RUNS_FILE = "runs.jsonl"


def perform(payload: dict[str, Any]) -> dict[str, Any]:
    """The child-process side: sleep, maybe fail, write the product, log the run."""
    started = time.time()
    behaviour = payload["behaviour"]
    time.sleep(behaviour.get("sleep", 0.0))
    if payload["attempt"] <= behaviour.get("fail_times", 0):
        if behaviour.get("fail") == "permanent":
            raise PermanentError(f"{payload['label']} is broken for good")
        if behaviour.get("fail") == "crash":
            os._exit(3)
        raise TemporaryError(f"{payload['label']} hit a passing problem")
    work = Path(payload["work"])
    name = payload["target"].replace(":", "_") + f"_g{payload['generation']}.txt"
    product = work / "products" / payload["kind"] / name
    product.parent.mkdir(parents=True, exist_ok=True)
    if not product.exists():
        tmp = product.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(payload["label"])
        os.replace(tmp, product)
    line = json.dumps(
        {
            "label": payload["label"],
            "pid": os.getpid(),
            "token": payload["token"],
            "start": started,
            "end": time.time(),
        }
    )
    with open(work / RUNS_FILE, "a") as runs:
        runs.write(line + "\n")
    return {"path": str(product)}


def spawn_and_hang(payload: dict[str, Any]) -> dict[str, Any]:
    """A child that starts a tool of its own (a grandchild), notes its pid and hangs; its
    ``finally`` notes that the child's own clean-up ran."""
    import subprocess
    import sys

    work = Path(payload["work"])
    tool = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (work / "tool.pid").write_text(str(tool.pid))
    try:
        time.sleep(600)
    finally:
        (work / "cleaned-up").write_text("the child's finally ran")
    return {}


def stage_fits_mosaic(payload: dict[str, Any]) -> dict[str, Any]:
    """A mosaic step for tests of what publishing writes into FITS headers: a small real
    FITS mosaic and weight map under ``<work>/staging/<target>_g<generation>/``."""
    import numpy as np
    from astropy.io import fits

    name = payload["target"].replace(":", "_") + f"_g{payload['generation']}"
    stage = Path(payload["work"]) / "staging" / name / "mosaic.fits"
    stage.parent.mkdir(parents=True, exist_ok=True)
    for path, value in ((stage.with_name("mosaic.weight.fits"), 1.0), (stage, 0.5)):
        if not path.exists():
            header = fits.Header({"BUNIT": "Jy/beam", "TELESCOP": "DSA-110"})
            data = np.full((8, 8), value, dtype=np.float32)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            fits.PrimaryHDU(data=data, header=header).writeto(tmp)
            os.replace(tmp, path)
    return {"path": str(stage)}


def sky_mosaic_centre(group_id: int) -> tuple[float, float]:
    """Where :func:`stage_sky_mosaic` centres the mosaic of group ``group_id``: RA, Dec
    (degrees)."""
    return 100.0 + 3.0 * (group_id - 1), 55.0


#: The radius (degrees) of the non-blank disc of a :func:`stage_sky_mosaic` mosaic, in an
#: image 2° square: its corners are blank.
SKY_MOSAIC_RADIUS_DEG = 0.7


def stage_sky_mosaic(payload: dict[str, Any]) -> dict[str, Any]:
    """A mosaic step for tests of footprints: a real FITS mosaic 2° square (1′ pixels, SIN,
    centred by :func:`sky_mosaic_centre`) that is blank (NaN) outside a disc of
    ``SKY_MOSAIC_RADIUS_DEG``, as a primary-beam cutoff blanks it, and its weight map."""
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS

    _, group = parse_target(payload["target"])
    ra, dec = sky_mosaic_centre(int(group))
    name = payload["target"].replace(":", "_") + f"_g{payload['generation']}"
    stage = Path(payload["work"]) / "staging" / name / "mosaic.fits"
    stage.parent.mkdir(parents=True, exist_ok=True)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [61, 61]
    wcs.wcs.cdelt = [-1 / 60, 1 / 60]
    rows, cols = np.mgrid[0:120, 0:120]
    inside = np.hypot(rows - 60, cols - 60) <= SKY_MOSAIC_RADIUS_DEG * 60
    for path, value in ((stage.with_name("mosaic.weight.fits"), 1.0), (stage, 0.5)):
        if not path.exists():
            data = np.where(inside, value, np.nan).astype(np.float32)
            header = wcs.to_header()
            header["BUNIT"] = "Jy/beam"
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            fits.PrimaryHDU(data=data, header=header).writeto(tmp)
            os.replace(tmp, path)
    return {"path": str(stage)}


def stage_previewed_mosaic(payload: dict) -> dict:
    """The sky mosaic of :func:`stage_sky_mosaic` and a real PNG
    quicklook of it beside it, as the mosaic step writes one."""
    import numpy as np
    from astropy.io import fits
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    result = stage_sky_mosaic(payload)
    mosaic = Path(result["path"])
    preview = mosaic.with_name("mosaic.png")
    if not preview.exists():
        figure = Figure(figsize=(4, 4))
        FigureCanvasAgg(figure)
        figure.add_subplot().imshow(np.nan_to_num(fits.getdata(mosaic)), origin="lower")
        tmp = preview.with_name(f".{preview.name}.tmp{os.getpid()}")
        figure.savefig(tmp, format="png")
        os.replace(tmp, preview)
    return result
