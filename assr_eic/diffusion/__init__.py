"""The degradation-aware diffusion decoder, backend-neutral (plain torch; never imports ComfyUI or diffusers).

- :mod:`.descriptor`: the degradation descriptor d = (codec, s, q, bpp) and the per-location uncertainty map;
- :mod:`.adaptor`: the control branch with the global compression-rescaling adaptor and the local
  compression-rescaling modulator, emitting residuals for the SD UNet's down and middle blocks;
- :mod:`.colorfix`: AdaIN and wavelet colour fixes against the decoded image;
- :mod:`.guidance`: training-free mode maths (denoise strength, low-frequency consistency step);
- :mod:`.consistency`: data consistency by construction (the file's band kept, the prior's share above it);
- :mod:`.schedule`: denoise as one starting sigma for every scheduler;
- :mod:`.sampler`: a small DDIM img2img loop over any epsilon-predicting UNet callable (tests, bench).
"""

from .adaptor import AdaptorFileError, AdaptorOutput, ASSRAdaptor, load_adaptor, save_adaptor
from .colorfix import adain_color_fix, wavelet_color_fix
from .descriptor import Degradation, uncertainty_map
from .guidance import consistency_step, denoise_strength, gaussian_lowpass, lowfreq_error

__all__ = [
    "ASSRAdaptor",
    "AdaptorFileError",
    "AdaptorOutput",
    "Degradation",
    "adain_color_fix",
    "consistency_step",
    "denoise_strength",
    "gaussian_lowpass",
    "load_adaptor",
    "lowfreq_error",
    "save_adaptor",
    "uncertainty_map",
    "wavelet_color_fix",
]
