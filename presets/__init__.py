"""Built-in YAML presets, installed with the package so `--preset NAME` works anywhere."""
