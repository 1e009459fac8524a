from .edm import SIGMA_DATA, EDMDenoiser, LogVarHead, edm_coefficients, edm_loss, guided_x0, training_sigma
from .res_sampler import DEFAULT_STEPS, initial_noise, karras_sigmas, res_2ab_sample

__all__ = [
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
