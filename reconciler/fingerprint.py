"""Settings fingerprints: what each stage's products depend on, hashed, so a product made
under other settings (or by another revision of a stage's code) is told apart.

A stage's fingerprint covers the stages before it: an image depends on the imaging settings
and on everything that made the calibrated MS it was made from. Products record the
fingerprint they were made under (None: made before fingerprints were kept, settings
unknown). Only reprocessing acts on a difference (:mod:`reconciler.desired.reprocess`): a
change of the configuration alone redoes nothing.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from reconciler.config import Settings
from reconciler.model import ActionKind


class Stage(enum.StrEnum):
    """The stages whose products are kept, in pipeline order."""

    CONVERT = "convert"
    CALIBRATE = "calibrate"
    IMAGE = "image"
    MOSAIC = "mosaic"
    CATALOGUE = "catalogue"


#: Bump a stage's revision when its code changes what it makes from the same inputs and
#: settings: reprocessing then makes that stage, and every stage after it, again.
REVISIONS = {
    Stage.CONVERT: 1,
    Stage.CALIBRATE: 1,
    Stage.IMAGE: 1,
    Stage.MOSAIC: 1,
    Stage.CATALOGUE: 1,
}

#: The stage whose fingerprint an action's product records.
STAGE_OF_KIND = {
    ActionKind.CONVERT: Stage.CONVERT,
    ActionKind.SOLVE: Stage.CALIBRATE,
    ActionKind.APPLY: Stage.CALIBRATE,
    ActionKind.IMAGE: Stage.IMAGE,
    ActionKind.MOSAIC: Stage.MOSAIC,
    ActionKind.CATALOGUE: Stage.CATALOGUE,
}


@dataclass(frozen=True)
class Fingerprints:
    """The fingerprint of every stage under one set of settings (12 hex digits each);
    ``catalogue`` is the published product's."""

    convert: str
    calibrate: str
    image: str
    mosaic: str
    catalogue: str

    def of(self, kind: ActionKind) -> str:
        """The fingerprint the product of an action of ``kind`` records."""
        return str(getattr(self, STAGE_OF_KIND[kind].value))


def fingerprints(settings: Settings) -> Fingerprints:
    """The fingerprints of every stage under ``settings``."""
    found = {}
    earlier = ""
    for stage, values in _stage_settings(settings).items():
        record = {"after": earlier, "revision": REVISIONS[stage], "settings": values}
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
        earlier = found[stage.value] = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return Fingerprints(**found)


def _stage_settings(settings: Settings) -> dict[Stage, dict[str, Any]]:
    """The settings each stage reads (what its step puts into its payload), by stage."""
    imaging = settings.imaging
    return {
        Stage.CONVERT: {"site": asdict(settings.site)},
        Stage.CALIBRATE: {"max_smearing_loss": imaging.max_smearing_loss},
        Stage.IMAGE: {
            "backend": imaging.backend,
            "field_of_view_deg": imaging.field_of_view_deg,
            "niter": imaging.niter,
            "threshold_jy": imaging.threshold_jy,
        },
        Stage.MOSAIC: {"pb_cutoff": settings.mosaic.pb_cutoff},
        Stage.CATALOGUE: {
            "thresh_pix": settings.catalogue.thresh_pix,
            "thresh_isl": settings.catalogue.thresh_isl,
        },
    }


def product_fingerprint(current: Fingerprints, images: Iterable[str | None]) -> str | None:
    """The fingerprint of a mosaic made now from tiles that record ``images``: the current
    one when every tile was made under the current settings, else None (made in part under
    other or unknown settings)."""
    tiles = list(images)
    if tiles and all(tile == current.image for tile in tiles):
        return current.catalogue
    return None
