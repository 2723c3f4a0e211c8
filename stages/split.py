"""DVC stage `split`: a thin shell over `fakeproof split` (see fakeproof/cli.py)."""

from fakeproof.cli import stage_main

if __name__ == "__main__":
    stage_main("split")
