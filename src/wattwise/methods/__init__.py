"""Energy-saving methods, one Lightning callback per module (see each module docstring)."""
