"""Small derived data files shipped with the tools (see scripts/ for how each was made)."""
