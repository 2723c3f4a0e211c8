"""DVC stage `evaluate`: a thin shell over `fakeproof evaluate` (see fakeproof/cli.py)."""

from fakeproof.cli import stage_main

if __name__ == "__main__":
    stage_main("evaluate")
