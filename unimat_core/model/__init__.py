"""The UniMat diffusion model: denoiser network, Gaussian diffusion, training and generation."""
