from .convert import from_ours, key_map, load_original_model_pt, load_state_dict_checked, to_ours

__all__ = ["from_ours", "key_map", "load_original_model_pt", "load_state_dict_checked", "to_ours"]
