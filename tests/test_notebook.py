"""demo/maformer_tutorial.ipynb, the notebook a user opens first: stored without outputs, and run from top to bottom
in a fresh kernel (nbclient) in a temporary folder: the backbone's shapes, the params and FLOPs the README states,
a detector's and a segmentor's drawings, the `--data-root` fine-tuning with the layer-decay recipe and its curve."""

import re

import nbformat
from nbclient import NotebookClient

from tests.helpers import REPO

NOTEBOOK = REPO / 'demo' / 'maformer_tutorial.ipynb'


def _text(cell) -> str:
    return ''.join(o.get('text', '') for o in cell.outputs if o.output_type == 'stream')


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == 'code']
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_runs_on_the_cpu(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}}
    ).execute()
    code = [c for c in notebook.cells if c.cell_type == 'code']
    assert not [o for c in code for o in c.outputs if o.output_type == 'error']
    texts = [_text(c) for c in code]
    everything = '\n'.join(texts)
    assert 'stride  4: (1, 64, 53, 84)' in everything and 'stride 32: (1, 512, 7, 11)' in everything
    assert 'MAFormer-T at 224x224: 26.7M parameters, 5.74G FLOPs' in everything  # the README's numbers
    pictures = [c for c in code if any('image/png' in o.get('data', {}) for o in c.outputs)]
    assert len(pictures) == 4  # the scene, the detections, the segmentation, the curve
    assert "classes from the JSON: ('ball', 'box', 'wedge') - box head classes: 3" in everything
    assert '54 parameter groups' in everything  # docs/layer_decay.md: 2 x (25 blocks + 2)
    (first, last) = map(float, re.search(r'8 iterations, loss ([\d.]+) -> ([\d.]+)', everything).groups())
    assert 0 < last < first  # from the initialisation, the first iterations lower the loss
    assert list((tmp_path / 'work_dirs' / 'tutorial' / 'finetune').glob('*/vis_data/scalars.json'))
