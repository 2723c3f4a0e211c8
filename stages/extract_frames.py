"""DVC stage `extract_frames`: a thin shell over `fakeproof extract_frames` (see fakeproof/cli.py)."""

from fakeproof.cli import stage_main

if __name__ == "__main__":
    stage_main("extract_frames")
