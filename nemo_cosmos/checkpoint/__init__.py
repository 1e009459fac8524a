from .convert import from_ours, key_map, load_original_model_pt, load_ours_safetensors, load_state_dict_checked, to_ours
from .locate import NEMO, ORIGINAL, OURS, find_dit_checkpoint, latest_experiment_checkpoint
from .nemo_dist import load_nemo_checkpoint, read_saved_config, save_nemo_checkpoint

__all__ = [
    "NEMO", "ORIGINAL", "OURS", "find_dit_checkpoint", "from_ours", "key_map", "latest_experiment_checkpoint",
    "load_nemo_checkpoint", "load_original_model_pt", "load_ours_safetensors", "load_state_dict_checked", "read_saved_config",
    "save_nemo_checkpoint", "to_ours",
]
