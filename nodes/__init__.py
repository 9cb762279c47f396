"""The pack's ComfyUI nodes, collected into the mappings ComfyUI reads."""

from .audio_nodes import LoadAudio, SaveAudio
from .model_nodes import LoadModel, VAEDecode, VAEEncode

NODE_CLASSES = (LoadAudio, SaveAudio, LoadModel, VAEEncode, VAEDecode)
NODE_CLASS_MAPPINGS = {cls.NODE_ID: cls for cls in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.NODE_ID: cls.DISPLAY_NAME for cls in NODE_CLASSES}
