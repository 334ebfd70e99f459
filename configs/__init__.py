"""Preset configuration files (`dev.toml`, `prod.toml`) shipped with modelsched."""
