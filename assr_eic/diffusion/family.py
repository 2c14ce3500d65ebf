"""Checkpoint families the diffusion decoder knows, and the training-free defaults that suit each.

The family is read from what the host tells about the loaded model (ComfyUI: the class name of its
detected model config, the prediction type and the latent channels), never guessed from file names. A
family not listed here is one clear error: sampling another kind of model with these defaults would give
garbage silently. The defaults are starting values chosen from each family's native resolution and
its usual guidance; with no real weights on hand they are not tuned on real checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass


class UnknownFamilyError(ValueError):
    """The model is of a family the diffusion decoder does not support."""


@dataclass(frozen=True)
class Family:
    """One checkpoint family: its key (stored in adaptors), the name users read, its latent channels, its
    native resolution (the tile size in pixels), classifier-free guidance, and Flux-style distilled
    guidance (None where the model has none)."""

    key: str
    name: str
    latent_channels: int
    native: int
    cfg: float
    guidance: float | None = None


FAMILIES = {
    f.key: f
    for f in (
        Family("sd1", "SD 1.x", 4, 512, 4.0),
        Family("sd2", "SD 2.x", 4, 768, 4.0),
        Family("sdxl", "SDXL", 4, 1024, 4.0),
        Family("sd3", "SD 3.x", 16, 1024, 3.5),
        Family("flux", "Flux", 16, 1024, 1.0, guidance=3.5),
    )
}

# ComfyUI's model-config classes (comfy.supported_models) of each family
CONFIG_CLASSES = {
    "SD15": "sd1",
    "SD20": "sd2",
    "SD21UnclipL": "sd2",
    "SD21UnclipH": "sd2",
    "SDXL": "sdxl",
    "SSD1B": "sdxl",
    "Segmind_Vega": "sdxl",
    "KOALA_700M": "sdxl",
    "KOALA_1B": "sdxl",
    "SD3": "sd3",
    "Flux": "flux",
    "FluxSchnell": "flux",
}


def family_of(config_class: str, latent_channels: int | None = None) -> Family:
    """The family of a model whose detected config class is ``config_class``; UnknownFamilyError otherwise."""
    key = CONFIG_CLASSES.get(config_class)
    if key is None:
        names = ", ".join(f.name for f in FAMILIES.values())
        raise UnknownFamilyError(
            f"the diffusion decoder does not support this model ({config_class}); it supports {names} checkpoints"
        )
    fam = FAMILIES[key]
    if latent_channels is not None and latent_channels != fam.latent_channels:
        raise UnknownFamilyError(
            f"this {fam.name} model has {latent_channels}-channel latents instead of {fam.latent_channels}; "
            "the diffusion decoder does not support this variant"
        )
    return fam


def check_adaptor_family(adaptor_family: str, model_family: Family, name: str = "the adaptor") -> None:
    """One sentence when an adaptor trained for one family meets a checkpoint of another."""
    if adaptor_family == model_family.key:
        return
    trained = FAMILIES[adaptor_family].name if adaptor_family in FAMILIES else repr(adaptor_family)
    raise ValueError(
        f"{name} was trained for {trained} checkpoints, but this checkpoint is {model_family.name}: "
        f"choose an adaptor trained for {model_family.name}, or none (training-free)"
    )
