"""Params and FLOPs (multiply-adds, attention counted) without a dataset.

    python tools/get_flops.py                                    # backbone variants at 224x224
    python tools/get_flops.py configs/mask_rcnn_maformer_s.py    # a whole model, at its task's default
    python tools/get_flops.py CONFIG --shape 800 1280            # ... at H W

The code is maformer_mm/tools/get_flops.py.
"""

from maformer_mm.tools.get_flops import backbone_rows, config_complexity, main, parse_args  # noqa: F401

if __name__ == '__main__':
    main()
