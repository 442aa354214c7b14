"""Where it runs and where results go: CLI, packaging, backends (Qarnot, local emulator), results."""
