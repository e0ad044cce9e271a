"""optkit: helpers for the optkit curriculum on making trained models small and fast."""
__version__ = "0.1.0"
