"""Draws the training curve (loss and validation metric against iterations) of a work dir as a PNG.

    python tools/plot_curve.py WORK_DIR [--metric coco/bbox_mAP] [--out curve.png]

The code is maformer_mm/tools/plot_curve.py.
"""

from maformer_mm.tools.plot_curve import main

if __name__ == '__main__':
    main()
