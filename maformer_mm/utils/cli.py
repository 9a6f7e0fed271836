"""What the tools share: finding a config and loading it with the command line applied."""
import argparse
import os.path as osp

from mmengine.config import Config

__all__ = ['config_from_args', 'config_path']


def config_path(name: str) -> str:
    """`name` itself, or for 'mmdet::swin/x.py' style names the file in that package's installed configs
    (the form `_base_` accepts, which `Config.fromfile` does not)."""
    package, sep, relative = name.partition('::')
    if not sep:
        return name
    from mmengine.utils import get_installed_path
    path = osp.join(get_installed_path(package), '.mim', 'configs', relative)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config {name!r} not found: no {path}')
    return path


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
