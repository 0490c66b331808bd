"""Files shipped inside the package (the tiny default model)."""
