import pytest

import maformer_mm  # noqa: F401  (registers MAFormer)
from maformer_mm.models import MAFormer


@pytest.mark.parametrize('registry', ['mmdet.registry', 'mmseg.registry', 'mmengine.registry'])
def test_every_host_registry_builds_the_same_class(registry, tiny_cfg):
    import importlib

    models = importlib.import_module(registry).MODELS
    model = models.build(dict(type='MAFormer', **tiny_cfg))
    assert type(model) is MAFormer
