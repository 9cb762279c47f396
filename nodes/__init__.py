"""The pack's ComfyUI nodes, collected into the mappings ComfyUI reads."""

from .audio_nodes import LoadAudio, SaveAudio
from .clap_nodes import CLAPSelect, LoadCLAP
from .model_nodes import LoadModel, VAEDecode, VAEEncode
from .ppae_nodes import AttentionController, DDIMInvert, Fuser

NODE_CLASSES = (LoadAudio, SaveAudio, LoadModel, VAEEncode, VAEDecode, DDIMInvert, AttentionController, Fuser,
                LoadCLAP, CLAPSelect)
NODE_CLASS_MAPPINGS = {cls.NODE_ID: cls for cls in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.NODE_ID: cls.DISPLAY_NAME for cls in NODE_CLASSES}
