"""The 3D side: voxel field, background, cameras, volume rendering, export. Knows nothing about diffusion."""
