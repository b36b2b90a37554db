"""draw: raw CAMs -> normalised maps -> frames -> PNG, MP4 and GIF files.

=============  ==============================================================
module         job
=============  ==============================================================
``normalise``  local / global min-max scaling (the only place it happens), whole or a run of layers at a time
``render``     frames: overlay, caption, position strip
``colormaps``  colormap lookup tables
``stripes``    non-spatial layers' 1-D evidence as a stripe
``fonts``      the one font loader
``video``      PNG, MP4 (the only ffmpeg writer), GIF
``montage``    volumes (3-D CAMs, the input volume) as a grid of slices
=============  ==============================================================
"""

from .colormaps import colormap_lut
from .montage import MAX_SLICES, Montage, montage_for
from .normalise import NORMALISATIONS, global_range, normalise, normalised_view
from .render import (
    MAX_SIDE,
    OUTLINE_COLOUR,
    FrameRenderer,
    FrameStyle,
    LayerMaps,
    deprocess,
    guided_panels,
    outline_pixels,
    overlay,
    panel_box,
    panel_size,
    render_frames,
)
from .stripes import Stripes
from .video import count_frames, probe, write_gif, write_mp4, write_png

__all__ = ["MAX_SIDE", "MAX_SLICES", "NORMALISATIONS", "OUTLINE_COLOUR", "Montage", "montage_for", "FrameRenderer",
           "FrameStyle", "LayerMaps", "Stripes", "colormap_lut", "count_frames", "deprocess", "global_range", "guided_panels", "normalise",
           "normalised_view",
           "outline_pixels", "overlay", "panel_box", "panel_size", "probe", "render_frames", "write_gif", "write_mp4",
           "write_png"]
