"""Checks of users' data sets before a run: COCO-format annotation files (`coco_checks`) and the label maps of
segmentation data (`seg_checks`)."""
