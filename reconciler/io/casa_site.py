"""CASA site configuration for running fully offline (DESIGN §5).

``casaconfig`` executes this file (``CASASITECONFIG`` points at it); nothing imports it.
It points CASA's measures at the data python-casacore ships, so CASA neither needs the
844 MB ``casadata`` package nor tries to download anything. casacore is located without
importing it: its C++ libraries must not load into a CASA process.
"""

import importlib.util as _importlib_util
import os as _os
import tempfile as _tempfile

_casacore_spec = _importlib_util.find_spec("casacore")
if _casacore_spec is None or not _casacore_spec.submodule_search_locations:
    raise RuntimeError("python-casacore is not installed; CASA needs its measures data")

measurespath = _os.path.join(next(iter(_casacore_spec.submodule_search_locations)), "data")
datapath = [measurespath]
measures_auto_update = False
data_auto_update = False
# CASA otherwise drops a casa-<date>.log into whatever directory the child started in.
logfile = _os.environ.get(
    "RECONCILER_CASA_LOGFILE", _os.path.join(_tempfile.gettempdir(), "reconciler-casa.log")
)
