"""Installs maformer_mm, the MAFormer backbone plugin for MMDetection, MMSegmentation and MMPretrain.

The windows below are those verified to work together; `requirements.txt` pins the exact set that
`make test` installs. mmcv must be built with its compiled ops (see the README); pip cannot express that.
"""
from pathlib import Path

from setuptools import find_packages, setup


def read_version() -> str:
    """Reads `__version__` from the package without importing it (its imports need torch)."""
    text = (Path(__file__).parent / 'maformer_mm' / 'version.py').read_text()
    return text.split('=')[1].strip().strip('"\'')


setup(
    name='maformer_mm',
    version=read_version(),
    description='MAFormer (Multi-scale Attention Fusion) backbone for MMDetection, MMSegmentation and MMPretrain',
    long_description=Path('README.md').read_text() if Path('README.md').exists() else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['maformer_mm', 'maformer_mm.*']),
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
        'numpy',
    ],
    extras_require={
        'pretrain': ['mmpretrain>=1.2.0,<1.3'],
        'deploy': ['onnx>=1.23', 'onnxscript>=0.7', 'onnxruntime>=1.31'],  # the verified set: requirements.txt
        'tests': ['pytest', 'mmpretrain>=1.2.0,<1.3'],
    },
    zip_safe=False,
)
