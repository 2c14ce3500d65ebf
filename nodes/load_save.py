"""Nodes that touch files: Load ASSR Model, Load ASSR Bitstream, Save ASSR Bitstream, and ASSR Embedded
Bitstream (a file carried inside the workflow as text)."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io, ui

from assr_eic.bitstream import BitstreamError, from_text, to_text
from assr_eic.model import DEFAULT_MODEL_PATH, ASSRModel, ModelFileError

from .common import (
    CATEGORY,
    DEFAULT_MODEL,
    FOLDER,
    ASSRBitstreamType,
    ASSRModelType,
    BitstreamItem,
    ModelHandle,
    display_path,
    file_digest,
    items_of,
    list_input_bitstreams,
    model_path,
    model_roots,
    read_input_bitstream,
    relative_message,
    save_bitstreams,
)


class LoadASSRModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ASSR_LoadModel",
            display_name="Load ASSR Model",
            category=CATEGORY,
            description=(
                "Loads the ASSR-EIC weights (downsampler, learned base codec, fidelity decoders). A file is "
                "always decoded with the weights that wrote it."
            ),
            inputs=[
                io.Combo.Input(
                    "model_name",
                    options=[DEFAULT_MODEL, *folder_paths.get_filename_list(FOLDER)],
                    default=DEFAULT_MODEL,
                    tooltip=("The built-in model shipped with the pack, or a .safetensors file from models/assr_eic/."),
                ),
            ],
            outputs=[ASSRModelType.Output(display_name="model", tooltip="The loaded ASSR-EIC model.")],
        )

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        path = None if model_name == DEFAULT_MODEL else model_path(model_name)
        try:
            # no module-level cache: ComfyUI caches the node's output, and a model kept alive elsewhere
            # after ComfyUI drops its ModelPatcher makes it garbage-collect before every prompt
            model = ASSRModel.load(path or DEFAULT_MODEL_PATH)
        except ModelFileError as e:
            text = relative_message(e, model_roots())
            raise ValueError(f"cannot load the ASSR model {model_name!r}: {text}") from None
        handle = ModelHandle.wrap(model, model_name)
        return io.NodeOutput(handle, ui=ui.PreviewText(f"model {model.fingerprint.hex()}"))


class LoadASSRBitstream(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ASSR_LoadBitstream",
            display_name="Load ASSR Bitstream",
            category=CATEGORY,
            description=(
                "Loads an .assr file from ComfyUI's input folder, or one of the samples shipped with the "
                "pack (marked [sample]). Press R to refresh the list, or use the upload button to add a "
                "file from your computer."
            ),
            inputs=[
                io.Combo.Input(
                    "bitstream",
                    options=list_input_bitstreams(),
                    tooltip=(
                        "An .assr file in ComfyUI's input folder (subfolders included), or a sample shipped "
                        "with the pack (name ending in [sample])."
                    ),
                ),
            ],
            outputs=[
                ASSRBitstreamType.Output(
                    display_name="bitstream", tooltip="The parsed .assr file, ready for ASSR Decode or Info."
                )
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, bitstream: str) -> str:
        return file_digest(bitstream)

    @classmethod
    def execute(cls, bitstream: str) -> io.NodeOutput:
        item = read_input_bitstream(bitstream)
        return io.NodeOutput([item], ui=ui.PreviewText(f"{bitstream}:\n  {item.summary()}"))


class SaveASSRBitstream(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ASSR_SaveBitstream",
            display_name="Save ASSR Bitstream",
            category=CATEGORY,
            description=(
                "Writes each bitstream of the batch as an .assr file in ComfyUI's output folder, numbered "
                "like Save Image; existing files are never overwritten. The node shows a download link "
                "for each file (served by ComfyUI's /view, so it works on a remote ComfyUI too)."
            ),
            inputs=[
                ASSRBitstreamType.Input("bitstream", tooltip="The bitstreams to save, one file per batch item."),
                io.String.Input(
                    "filename_prefix",
                    default="ASSR",
                    tooltip=(
                        "File name prefix; may include a subfolder (assr/photo). A counter and .assr are "
                        "appended. Must stay inside the output folder."
                    ),
                ),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, bitstream, filename_prefix: str) -> io.NodeOutput:
        items = items_of(bitstream)
        results = save_bitstreams(items, filename_prefix)
        text = "\n".join(f"{display_path(r)}:\n  {it.summary()}" for r, it in zip(results, items, strict=True))
        # each file as text too, for the canvas's "embed in workflow" button (ASSR Embedded Bitstream)
        return io.NodeOutput(ui={"assr": results, "text": [text], "assr_text": [to_text(it.data) for it in items]})


class ASSREmbeddedBitstream(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ASSR_EmbeddedBitstream",
            display_name="ASSR Embedded Bitstream",
            category=CATEGORY,
            description=(
                "An .assr file carried inside the workflow as text (assr: then base64), so a shared workflow "
                "JSON, or a PNG saved by ComfyUI, decodes on another machine with no separate file. Save ASSR "
                "Bitstream's 'embed in workflow' button adds one filled in; `assr-eic info --text FILE` prints "
                "the text of any file."
            ),
            inputs=[
                io.String.Input(
                    "text",
                    multiline=True,
                    default="",
                    tooltip="The file as text: 'assr:' followed by its bytes in base64 (line breaks are ignored).",
                ),
            ],
            outputs=[
                ASSRBitstreamType.Output(
                    display_name="bitstream", tooltip="The parsed .assr file, ready for ASSR Decode or Info."
                )
            ],
        )

    @classmethod
    def execute(cls, text: str) -> io.NodeOutput:
        if not text.strip():
            raise ValueError(
                "ASSR Embedded Bitstream is empty: press 'embed in workflow' under Save ASSR Bitstream, or paste "
                "the text of a file (assr-eic info --text FILE)"
            )
        try:
            item = BitstreamItem.from_bytes(from_text(text), "ASSR Embedded Bitstream's text")
        except BitstreamError as e:
            raise ValueError(f"ASSR Embedded Bitstream: {e}") from None
        return io.NodeOutput([item], ui=ui.PreviewText(f"embedded:\n  {item.summary()}"))
