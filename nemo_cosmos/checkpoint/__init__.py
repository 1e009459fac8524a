from .convert import from_ours, key_map, load_original_model_pt, load_ours_safetensors, load_state_dict_checked, to_ours
from .loading import CheckpointInfo, inspect_checkpoint, load_dit, read_safetensors_context, save_dit_safetensors
from .locate import NEMO, ORIGINAL, OURS, PIPELINE, find_dit_checkpoint, latest_experiment_checkpoint
from .nemo_dist import load_nemo_checkpoint, read_saved_context, save_nemo_checkpoint

__all__ = [
    "NEMO", "ORIGINAL", "OURS", "PIPELINE", "CheckpointInfo", "find_dit_checkpoint", "from_ours", "inspect_checkpoint",
    "key_map", "latest_experiment_checkpoint", "load_dit", "load_nemo_checkpoint", "load_original_model_pt",
    "load_ours_safetensors", "load_state_dict_checked", "read_safetensors_context", "read_saved_context",
    "save_dit_safetensors", "save_nemo_checkpoint", "to_ours",
]
