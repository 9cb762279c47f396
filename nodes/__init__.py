"""The pack's ComfyUI nodes, collected into the mappings ComfyUI reads."""

from .ap_adapter_nodes import APAdapterApply, APAdapterTask, LoadAPAdapter
from .audio_nodes import CompareAudio, LoadAudio, SaveAudio
from .clap_nodes import CLAPSelect, LoadCLAP
from .instruct_nodes import InstructEdit, LoadSAOInstruct
from .model_nodes import LoadModel, VAEDecode, VAEEncode
from .model_routes import register_routes
from .musicgen_nodes import LoadMusicGen, MusicGenEdit
from .ppae_nodes import AttentionController, DDIMInvert, Fuser, PromptEdit
from .region_nodes import CutRegion, JoinWindows, PasteRegion, SplitWindows
from .sampling_nodes import Sample

NODE_CLASSES = (LoadAudio, SaveAudio, LoadModel, VAEEncode, VAEDecode, DDIMInvert, AttentionController, Fuser,
                LoadCLAP, CLAPSelect, Sample, LoadAPAdapter, APAdapterTask, APAdapterApply, LoadMusicGen, MusicGenEdit,
                LoadSAOInstruct, InstructEdit, PromptEdit, CompareAudio, CutRegion, PasteRegion, SplitWindows,
                JoinWindows)
NODE_CLASS_MAPPINGS = {cls.NODE_ID: cls for cls in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.NODE_ID: cls.DISPLAY_NAME for cls in NODE_CLASSES}

register_routes()  # the "Get models…" button's routes, when ComfyUI's server is running
