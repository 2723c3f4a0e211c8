"""DVC stage `adv_finetune`: a thin shell over `fakeproof adv_finetune` (see fakeproof/cli.py)."""

from fakeproof.cli import stage_main

if __name__ == "__main__":
    stage_main("adv_finetune")
