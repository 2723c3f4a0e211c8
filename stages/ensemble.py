"""DVC stage `ensemble`: a thin shell over `fakeproof ensemble` (see fakeproof/cli.py)."""

from fakeproof.cli import stage_main

if __name__ == "__main__":
    stage_main("ensemble")
