"""Tests (evaluates) a checkpoint of a detection, segmentation or classification config.

    python tools/test.py configs/mask_rcnn_maformer_s.py CKPT [--out results.pkl] [--show-dir DIR] [--tta]
    python tools/test.py configs/mask_rcnn_maformer_t.py CKPT --data-root data/my_coco   # your own COCO data
    python tools/test.py configs/upernet_maformer_t_512x512_160k_ade20k.py CKPT --out preds/  # one PNG per image
    tools/dist_test.sh configs/mask_rcnn_maformer_s.py CKPT 8

Prints the config's metrics (COCO bbox/segm AP, per-class IoU and mIoU, top-1). The code is
maformer_mm/tools/test.py.
"""

from maformer_mm.tools.test import main

if __name__ == '__main__':
    main()
