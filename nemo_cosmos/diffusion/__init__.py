from .edm import SIGMA_DATA, EDMDenoiser, edm_coefficients, guided_x0
from .res_sampler import DEFAULT_STEPS, initial_noise, karras_sigmas, res_2ab_sample

__all__ = [
    "DEFAULT_STEPS",
    "SIGMA_DATA",
    "EDMDenoiser",
    "edm_coefficients",
    "guided_x0",
    "initial_noise",
    "karras_sigmas",
    "res_2ab_sample",
]
