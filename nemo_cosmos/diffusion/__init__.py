from .edm import SIGMA_DATA, EDMDenoiser, LogVarHead, edm_coefficients, edm_loss, guided_x0, training_sigma
from .conditioning import AUGMENT_SIGMA, ConditionedDenoiser, VideoCondition, conditioned_latent_frames
from .res_sampler import DEFAULT_STEPS, initial_noise, karras_sigmas, res_2ab_sample, seeded_normals

__all__ = [
    "AUGMENT_SIGMA",
    "ConditionedDenoiser",
    "VideoCondition",
    "conditioned_latent_frames",
    "seeded_normals",
    "DEFAULT_STEPS",
    "SIGMA_DATA",
    "EDMDenoiser",
    "LogVarHead",
    "edm_loss",
    "training_sigma",
    "edm_coefficients",
    "guided_x0",
    "initial_noise",
    "karras_sigmas",
    "res_2ab_sample",
]
