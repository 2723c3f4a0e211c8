"""DVC stage `pretrain`: a thin shell over `fakeproof pretrain` (see fakeproof/cli.py)."""

from fakeproof.cli import stage_main

if __name__ == "__main__":
    stage_main("pretrain")
