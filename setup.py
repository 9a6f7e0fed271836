"""Installs maformer_mm, the MAFormer backbone plugin for MMDetection, MMSegmentation and MMPretrain.

The windows below are those verified to work together; `requirements.txt` pins the exact set that
`make test` installs. mmcv must be built with its compiled ops (see docs/get_started.md); pip cannot express that.

A wheel carries, besides the package, what users run: the configs under `maformer_mm/.mim/configs/maformer/`
with the model index (`maformer_mm/.mim/model-index.yml`, `configs/metafile.yml`), and the tools as console
commands (`maformer-train`, ...) and `python -m maformer_mm.tools.<tool>` modules. Beside the package it installs
`maformer_mm_prefix.py` and `maformer_mm_prefix.pth`, which let mmengine resolve `maformer_mm::` config bases before
maformer_mm is imported (that module's docstring says how); an editable install gets the `.pth` file too.
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CONFIG_LINK = Path('maformer_mm', '.mim', 'configs', 'maformer')  # a link to configs/ in a source checkout
PREFIX_PTH = 'maformer_mm_prefix.pth'  # site-packages runs its line at start: see maformer_mm_prefix.py


def read_version() -> str:
    """Reads `__version__` from the package without importing it (its imports need torch)."""
    text = (ROOT / 'maformer_mm' / 'version.py').read_text()
    return text.split('=')[1].strip().strip('"\'')


class BuildWithConfigs(build_py):
    """Copies the configs (files, not the link) and the model index into the built package, and the `.pth` file
    to the top of site-packages."""

    def run(self) -> None:
        super().run()
        if getattr(self, 'editable_mode', False):  # an editable install reads the configs through the link
            # An editable wheel holds only its own files and those in the install folder it packs (setuptools'
            # editable_wheel points `install_lib` there); the build folder is dropped.
            shutil.copy2(ROOT / PREFIX_PTH, Path(self.get_finalized_command('install').install_lib, PREFIX_PTH))
            return
        shutil.copy2(ROOT / PREFIX_PTH, Path(self.build_lib, PREFIX_PTH))
        mim = Path(self.build_lib, 'maformer_mm', '.mim')
        target = Path(self.build_lib, CONFIG_LINK)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        shutil.copytree(ROOT / 'configs', target, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        shutil.copy2(ROOT / CONFIG_LINK.parents[1] / 'model-index.yml', mim / 'model-index.yml')


TOOLS = {  # console command -> maformer_mm.tools.entry_points attribute
    'maformer-train': 'train',
    'maformer-test': 'test',
    'maformer-infer': 'infer',
    'maformer-export': 'export_onnx',
    'maformer-flops': 'get_flops',
    'maformer-convert': 'convert_checkpoint',
    'maformer-configs': 'configs',
    'maformer-plot-curve': 'plot_curve',
    'maformer-demo': 'demo',
    'maformer-demo-seg': 'demo_seg',
}

setup(
    name='maformer_mm',
    version=read_version(),
    description='MAFormer (Multi-scale Attention Fusion) backbone for MMDetection, MMSegmentation and MMPretrain',
    long_description=(ROOT / 'README.md').read_text() if (ROOT / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['maformer_mm', 'maformer_mm.*']),
    py_modules=['maformer_mm_prefix'],
    cmdclass={'build_py': BuildWithConfigs},
    entry_points={
        'console_scripts': [f'{name} = maformer_mm.tools.entry_points:{attr}' for name, attr in TOOLS.items()]
    },
    install_requires=[
        # torch 2.6: named safe globals `(obj, 'module.name')` for torch.load's weights-only unpickler, which the
        # checkpoint loading needs (2.4 brought selective checkpointing); 2.14+ headers need C++20, mmcv 2.1.0's
        # build is C++17.
        'torch>=2.6,<2.14',
        'torchvision>=0.21,<0.29',  # the releases that go with torch 2.6 to 2.13
        'mmengine>=0.10.4,<0.11',
        'mmcv>=2.1.0,<2.2.0',  # mmdet 3.3.0 and mmseg 1.2.2 refuse mmcv 2.2
        'mmdet>=3.3.0,<3.4',
        'mmsegmentation>=1.2.2,<1.3',
        'setuptools<82',  # pkg_resources: mmcv's build and mmengine's `mmdet::` config bases
        'ftfy',  # imported by mmsegmentation 1.2.2, not declared by it
        'regex',  # likewise
        'pycocotools',
        'safetensors>=0.4',  # .safetensors backbone weights
        'matplotlib',  # training curves (tools/plot_curve.py)
        'numpy',
    ],
    extras_require={
        'pretrain': ['mmpretrain>=1.2.0,<1.3'],
        'deploy': ['onnx>=1.23', 'onnxscript>=0.7', 'onnxruntime>=1.31'],  # the verified set: requirements.txt
        # nbclient, nbformat, ipykernel: tests/test_notebook.py runs demo/maformer_tutorial.ipynb
        'tests': ['pytest', 'ruff', 'mmpretrain>=1.2.0,<1.3', 'nbclient>=0.10', 'nbformat>=5.9', 'ipykernel>=6.25'],
    },
    zip_safe=False,
)
