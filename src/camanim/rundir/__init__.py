"""rundir: the one owner of the run-folder contract.

=============  ==============================================================
module         job
=============  ==============================================================
``names``      every file name of a run folder
``atomic``     writing atomically: one file, or a whole folder
``outdir``     the output folder: checked (never a folder camanim did not write), staged, replaced whole
``manifest``   ``manifest.json``: the schema, written and read
``cams``       ``cams.npz``: raw CAMs (layer maps), written and read
``ybroad``     ``ybroad.json`` / ``ybroad.csv``, written and read
``load``       a run folder (or a result in memory) as a :class:`RunView`
``write``      frames and videos of a run, drawn and encoded together
=============  ==============================================================
"""

from . import names
from .atomic import (
    atomic_path,
    remove_stale_temp_dirs,
    replace_dir,
    stale_temp_dirs,
    write_text,
)
from .cams import SavedCams, check_run_cams, load_cams, read_cams, read_run_cams, write_cams
from .load import Frames, RunView, load_run
from .manifest import (
    read_json,
    read_manifest,
    run_folders,
    run_manifest,
    set_manifest,
    with_metrics,
    with_outputs,
    with_ybroad,
    write_manifest,
)
from .outdir import prepare_out_dir, staged_dir
from .write import Media, SaveOptions, write_media
from .ybroad import read_ybroad, write_ybroad_tables

__all__ = ["Frames", "Media", "RunView", "SaveOptions", "SavedCams", "atomic_path", "check_run_cams", "load_cams", "load_run", "names",
           "remove_stale_temp_dirs", "stale_temp_dirs",
           "prepare_out_dir", "read_cams", "read_json", "read_run_cams", "read_manifest", "read_ybroad", "replace_dir", "run_folders", "run_manifest",
           "set_manifest", "staged_dir", "with_metrics", "with_outputs", "with_ybroad", "write_cams", "write_manifest",
           "write_media", "write_text", "write_ybroad_tables"]
