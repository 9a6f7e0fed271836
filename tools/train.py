"""Trains a detection, segmentation or classification config (the config's `default_scope` decides).

    python tools/train.py configs/mask_rcnn_maformer_s.py [--work-dir DIR] [--amp] [--resume [CKPT]]
    python tools/train.py configs/mask_rcnn_maformer_t.py --data-root data/my_coco   # your own COCO-format data
    python tools/train.py configs/mask_rcnn_maformer_t.py --no-pretrained   # without ImageNet weights
    tools/dist_train.sh configs/mask_rcnn_maformer_s.py 8

The arguments are those of mmdet's and mmseg's tools/train.py, plus `--data-root`, `--no-pretrained` and `--device`
(`--help` lists them). The code is maformer_mm/tools/train.py.
"""

from maformer_mm.tools.train import main

if __name__ == '__main__':
    main()
