"""DVC stage `download`: a thin shell over `fakeproof download` (see fakeproof/cli.py)."""

from fakeproof.cli import stage_main

if __name__ == "__main__":
    stage_main("download")
