"""What the tools share: finding a config and loading it with the command line applied."""
import argparse
import os.path as osp

from mmengine.config import Config

__all__ = ['config_from_args', 'load_config']


def load_config(name: str) -> Config:
    """Loads a config file, or an installed package's config named as `_base_` names them
    ('mmdet::swin/x.py', through mmengine's `get_config`)."""
    if '::' in name:
        from mmengine.hub import get_config
        return get_config(name)
    return Config.fromfile(name)


def config_from_args(args: argparse.Namespace) -> Config:
    """Loads `args.config` and applies `--launcher`, `--cfg-options` and `--work-dir` as mmdet's tools do
    (default work dir: ./work_dirs/<config name>)."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg
