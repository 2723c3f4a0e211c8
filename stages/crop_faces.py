"""DVC stage `crop_faces`: a thin shell over `fakeproof crop_faces` (see fakeproof/cli.py)."""

from fakeproof.cli import stage_main

if __name__ == "__main__":
    stage_main("crop_faces")
