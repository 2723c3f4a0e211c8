"""fakeproof: deepfake detectors that stay correct under attack, proven with numbers."""
__version__ = "0.1.0"
