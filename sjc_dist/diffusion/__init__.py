"""The diffusion side: denoisers in the VE form D(x, sigma, cond) -> x0_hat. Knows nothing about 3D."""
