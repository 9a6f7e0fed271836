"""Writes the weights of a MAFormer checkpoint in the form this project's loaders read.

    python tools/convert_checkpoint.py SRC DST [--ema] [--keep-head] [--safetensors] [--trust]

timm-style keys are renamed to this project's; weights already in its naming are copied. `--help` says more.
The code is maformer_mm/tools/convert_checkpoint.py.
"""

import sys

from maformer_mm.tools.convert_checkpoint import main

if __name__ == '__main__':
    sys.exit(main())
