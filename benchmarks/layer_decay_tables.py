"""Writes the layer-decay tables of docs/layer_decay.md: for MAFormer-T, S and B, the depth of each part of the
backbone and the lr scale each recipe of configs/_base_/maformer_layer_decay.py gives it, read from the parameter
groups `LayerDecayOptimWrapperConstructor` builds on the backbone (not computed beside it).

    python -m benchmarks.layer_decay_tables

The tables replace the text between the two markers of the page; tests/test_engine/test_layer_decay.py checks that
the page holds what this writes.
"""

import argparse
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / 'docs' / 'layer_decay.md'
RECIPES = ROOT / 'configs' / '_base_' / 'maformer_layer_decay.py'
BEGIN = '<!-- tables: python -m benchmarks.layer_decay_tables -->'
END = '<!-- end of the tables -->'
ARCHS = (('T', 'tiny'), ('S', 'small'), ('B', 'base'))
# Columns: (heading, fragment of configs/_base_/maformer_layer_decay.py); kinds sharing a rate share a column.
COLUMNS = (
    ('Mask R-CNN (0.95)', 'layer_decay_mask_rcnn'),
    ('Cascade, DINO, Mask2Former (0.9)', 'layer_decay_cascade'),
    ('UperNet (stage-wise 0.9)', 'layer_decay_upernet'),
)


def _part(name: str, depths: Sequence[int]) -> Tuple[int, str]:
    """(order, label) of the backbone part a parameter belongs to."""
    parts = name.split('.')
    if parts[0] == 'patch_embed':
        return 0, 'stem (patch embedding)'
    if parts[0].startswith('norm'):
        return 99, 'output norms (then neck, heads)'
    stage = int(parts[1])
    if parts[2] == 'downsample' or int(parts[3]) == 0:
        label = f'stage {stage + 1}: ' + ('merging + block 1' if stage else 'block 1')
        return 1 + 2 * stage, label
    last = depths[stage]
    label = f'stage {stage + 1}: block 2' if last == 2 else f'stage {stage + 1}: blocks 2-{last}'
    return 2 + 2 * stage, label


def _span(values: List[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return fmt.format(low) if low == high else f'{fmt.format(low)}-{fmt.format(high)}'


def _groups(model, fragment: dict) -> Tuple[Dict[str, Tuple[int, float]], int]:
    """name -> (depth, lr scale) of every backbone parameter, from the constructor's groups, and the number of
    groups with a neck and heads: the backbone's, and one for the heads' decayed weights at the last depth (their
    undecayed ones join the output norms' group)."""
    from maformer_mm.engine.layer_decay import LayerDecayOptimWrapperConstructor

    optimizer = dict(type='AdamW', lr=1.0, weight_decay=fragment['optimizer']['weight_decay'])
    paramwise = {k: v for k, v in fragment['paramwise_cfg'].items() if k != '_delete_'}
    groups = LayerDecayOptimWrapperConstructor(dict(optimizer=optimizer), paramwise)(model).optimizer.param_groups
    return {n: (g['layer_id'], g['lr_scale']) for g in groups for n in g['param_names']}, len(groups) + 1


def variant_table(letter: str, arch: str, recipes: Config) -> str:
    from maformer_mm.models import MAFormer

    model = MAFormer(arch=arch)
    depths = model.arch_settings['depths']
    built = [_groups(model, recipes[key]) for _, key in COLUMNS]
    columns = [table for table, _ in built]
    rows: Dict[Tuple[int, str], List[Tuple[str, int]]] = {}
    for name, param in model.named_parameters():
        rows.setdefault(_part(name, depths), []).append((name, param.numel()))
    num_layers = max(d for d, _ in columns[0].values()) + 1
    lines = [
        f'**MAFormer-{letter}** (blocks {"-".join(map(str, depths))}: {num_layers} depths layer-wise, 6 stage-wise; '
        f'parameter groups with a neck and heads: {built[0][1]} layer-wise, {built[2][1]} stage-wise)',
        '',
        f'| part | params | depth | {COLUMNS[0][0]} | {COLUMNS[1][0]} | stage depth | {COLUMNS[2][0]} |',
        '|---|---|---|---|---|---|---|',
    ]
    for (_, label), members in sorted(rows.items()):
        names = [n for n, _ in members]
        layer = [columns[0][n] for n in names]
        count = sum(c for _, c in members)
        cells = [f'{count / 1e6:.2f}M' if count >= 1e5 else f'{count / 1e3:.1f}K', _span([d for d, _ in layer], '{}')]
        cells += [_span([columns[i][n][1] for n in names], '{:.3f}') for i in (0, 1)]
        cells += [_span([columns[2][n][0] for n in names], '{}'), _span([columns[2][n][1] for n in names], '{:.3f}')]
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def render() -> str:
    """The text between the page's markers."""
    import maformer_mm  # noqa: F401  (registers the constructor)

    recipes = Config.fromfile(str(RECIPES))
    return '\n\n'.join(variant_table(letter, arch, recipes) for letter, arch in ARCHS)


def page_tables(text: str) -> str:
    """The tables the page holds now."""
    if BEGIN not in text or END not in text:
        raise ValueError(f'{PAGE} lacks the markers {BEGIN!r} and {END!r}')
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip('\n')


def main(argv: Optional[Sequence[str]] = None) -> Path:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    text = PAGE.read_text()
    page_tables(text)
    head, rest = text.split(BEGIN, 1)
    PAGE.write_text(f'{head}{BEGIN}\n{render()}\n{END}{rest.split(END, 1)[1]}')
    print(f'wrote the tables of {PAGE}')
    return PAGE


if __name__ == '__main__':
    main()
