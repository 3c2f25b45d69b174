"""A sweep drawn: top-1 against FLOPs and measured speedup, and object
retention against FLOPs, one series per main method."""
from typing import Dict, List

from .recipes import COMPARE_TARGETS, METHODS

#: What tells series apart: ten colours (matplotlib's default cycle), seven
#: markers and, for each further ten series, another line style. 10 and 7
#: have no common factor, so colour and marker repeat only after 70 series,
#: and with the line style after 280.
SERIES_MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X')
SERIES_LINESTYLES = ('-', '--', ':', '-.')
MOST_SERIES = 280


def series_styles(count: int) -> List[Dict]:
    """The ``plot`` keywords (color, marker, linestyle) of ``count`` series
    (at most ``MOST_SERIES``), no two alike; neighbours differ in colour and
    marker, and series ten apart in line style too."""
    from matplotlib import colormaps
    colours = colormaps['tab10'].colors
    if count > MOST_SERIES:
        raise ValueError(f'{count} series cannot be told apart in one plot '
                         f'(at most {MOST_SERIES})')
    return [dict(color=colours[i % len(colours)],
                 marker=SERIES_MARKERS[i % len(SERIES_MARKERS)],
                 linestyle=SERIES_LINESTYLES[i // len(colours) %
                                             len(SERIES_LINESTYLES)])
            for i in range(count)]


def pareto_figure(rows: List[Dict], title: str = ''):
    """Top-1 against the FLOPs ratio and against measured speedup, and the
    companion plot of object retention against the FLOPs ratio: one line
    per main method (model 0), each in its own style
    (:func:`series_styles`), dense as a black star."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r['model'] == 0]
    main = [m for m in dict.fromkeys(r['method'] for r in rows)
            if m in METHODS and METHODS[m].targets != COMPARE_TARGETS]
    dense = [r for r in rows if r['method'] == 'dense'][0]
    panels = [('flops_ratio', 'top1', 'FLOPs vs dense', 'top-1 (%)'),
              ('speedup', 'top1', 'measured speedup vs dense', 'top-1 (%)')]
    if dense['retention'] is not None:
        panels.append(('flops_ratio', 'retention', 'FLOPs vs dense',
                       'actor tubelets held after the last block (%)'))
    figure, axes = plt.subplots(1, len(panels),
                                figsize=(5.2 * len(panels), 4.4))
    styles = series_styles(len(main))
    for axis, (x, y, x_label, y_label) in zip(axes, panels):
        for method, style in zip(main, styles):
            points = sorted((r[x], 100 * r[y]) for r in rows
                            if r['method'] == method)
            axis.plot(*zip(*points), label=method, **style)
        axis.plot(dense[x], 100 * dense[y], marker='*', markersize=14,
                  color='black', linestyle='none', label='dense')
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_pareto(rows: List[Dict], out_png: str, title: str = '') -> None:
    """:func:`pareto_figure` written to ``out_png``."""
    figure = pareto_figure(rows, title)
    figure.savefig(out_png, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(figure)
