"""`python -m zoft ...` is zoft-run (what torchrun launches: torchrun --nproc-per-node=2 -m zoft)."""

from zoft.cli import run_main

if __name__ == "__main__":
    run_main()
