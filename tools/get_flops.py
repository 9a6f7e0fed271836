"""Params and FLOPs (multiply-adds, attention counted) without a dataset.

    python tools/get_flops.py                                    # backbone variants at 224x224
    python tools/get_flops.py configs/mask_rcnn_maformer_s.py    # a whole model, at its task's default
    python tools/get_flops.py CONFIG --shape 800 1280            # ... at H W

The code is maformer_mm/tools/get_flops.py.
"""

from maformer_mm.tools.get_flops import main

if __name__ == '__main__':
    main()
