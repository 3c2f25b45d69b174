"""What tools/test.py and tools/train.py print: the few lines worth reading.

mmengine's Runner logs, at INFO, the whole environment, the whole config and
the order of every hook of every stage (some 300 lines before the first
metric). They stay in the log file (``WORK_DIR/TIMESTAMP/TIMESTAMP.log``);
:class:`QuietRunner` keeps them off the console only, with a
:class:`logging.Filter` on the console handler of its logger, and
:class:`RunSummaryHook` says instead what runs: the model and its checkpoint,
the token reduction, the data, the processes. Progress (``Epoch(test)
[k/n]``), metrics, warnings and errors show as before; ``--verbose`` (a
:class:`CheckedRunner`) shows everything. Either way the checkpoint loads
are checked (:mod:`mmtokred.checkpoint_fit`): one that does not fit the
model stops the run.
"""
import logging
from typing import Iterable, List, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from . import checkpoint_fit

#: The beginnings of the INFO messages of mmengine 0.10's Runner that the
#: console leaves out (mmengine/runner/runner.py): its ``_log_env`` (the
#: environment, then the config), the hook order logged at the end of
#: ``__init__``, and ``wrap_model``'s note on SyncBN in a single process.
LEFT_OFF_THE_CONSOLE = (
    '\n' + '-' * 60 + '\nSystem environment:',
    'Config:\n',
    'Hooks will be executed in the following order:',
    'Distributed training is not used, all SyncBatchNorm (SyncBN) layers',
)


class ConsoleFilter(logging.Filter):
    """Drops the INFO (and DEBUG) records that begin with one of
    :data:`LEFT_OFF_THE_CONSOLE`; every other record, and every warning and
    error, passes."""

    def __init__(self, prefixes: Iterable[str] = LEFT_OFF_THE_CONSOLE):
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not str(record.msg).startswith(self.prefixes)


def console_handlers(logger: logging.Logger) -> List[logging.Handler]:
    """The handlers of ``logger`` that write to a stream, not to a file."""
    return [
        handler for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
    ]


def quiet_console(logger: logging.Logger) -> None:
    """Put a :class:`ConsoleFilter` on the console handlers of ``logger``
    (idempotent); its file handlers keep everything."""
    for handler in console_handlers(logger):
        if not any(isinstance(f, ConsoleFilter) for f in handler.filters):
            handler.addFilter(ConsoleFilter())


def pretrained_checkpoints(spec) -> List[str]:
    """The checkpoints of the ``init_cfg``s of type ``Pretrained`` in a
    model config."""
    found = []
    if isinstance(spec, dict):
        if spec.get('type') == 'Pretrained' and spec.get('checkpoint'):
            found.append(str(spec['checkpoint']))
        for value in spec.values():
            found += pretrained_checkpoints(value)
    elif isinstance(spec, (list, tuple)):
        for value in spec:
            found += pretrained_checkpoints(value)
    return found


class CheckedRunner(Runner):
    """mmengine's Runner whose checkpoint loads (``load_from``, ``resume``,
    an ``init_cfg`` of type ``Pretrained``) must fit the model
    (:mod:`mmtokred.checkpoint_fit`; the config's ``partial_load`` opts in
    to a partial one). ``checkpoint_fits``: ``(file, fit)`` of each load."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.partial_load = (self.cfg.get('partial_load')
                             if self.cfg is not None else None)
        checkpoint_fit.check_partial_load(self.partial_load)
        self.checkpoint_fits = []

    def _checked(self, source: str):
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        return checkpoint_fit.checked_loads(self.partial_load, model, source)

    def _init_model_weights(self) -> None:
        files = pretrained_checkpoints(
            (self.cfg.get('model') if self.cfg is not None else None) or {})
        for filename in files:
            checkpoint_fit.require_file(filename)
        with self._checked(' and '.join(files) or 'init_cfg') as fits:
            super()._init_model_weights()
        self.checkpoint_fits += fits

    def load_checkpoint(self, filename: str, *args, **kwargs):
        checkpoint_fit.require_file(filename)
        with self._checked(filename) as fits:
            checkpoint = super().load_checkpoint(filename, *args, **kwargs)
        self.checkpoint_fits += fits
        return checkpoint

    def resume(self, filename: str, *args, **kwargs) -> None:
        checkpoint_fit.require_file(filename)
        with self._checked(filename) as fits:
            super().resume(filename, *args, **kwargs)
        self.checkpoint_fits += fits


class QuietRunner(CheckedRunner):
    """mmengine's Runner whose console leaves out the environment, config
    and hook order, which it still logs to its file (see the module)."""

    def build_logger(self, *args, **kwargs):
        # Runner.__init__ logs the environment right after building its
        # logger: the filter must be on the handler before.
        logger = super().build_logger(*args, **kwargs)
        quiet_console(logger)
        return logger


# ---------------------------------------------------------------------------
# The summary lines
# ---------------------------------------------------------------------------
#: Backbone settings shown beside its type, when the config has them.
BACKBONE_KEYS = ('model_name', 'arch', 'img_size', 'patch_size',
                 'embed_dims', 'depth', 'num_heads', 'num_frames')


def _call(spec: dict) -> str:
    """``Type(key=value, ...)`` of a config dict."""
    spec = dict(spec)
    name = spec.pop('type', '?')
    args = ', '.join(f'{key}={value!r}' for key, value in spec.items())
    return f'{name}({args})'


def describe_reduction(token_reduction) -> str:
    """One line for a backbone's ``token_reduction`` setting."""
    if not token_reduction:
        return 'none (dense: every token through every block)'
    if isinstance(token_reduction, str):
        return token_reduction
    parts = []
    for stage in ('input', 'blocks'):
        spec = token_reduction.get(stage)
        if spec:
            parts.append(f'{stage} {_call(spec)}' if isinstance(spec, dict)
                         else f'{stage} {spec!r}')
    others = {key: value for key, value in token_reduction.items()
              if key not in ('input', 'blocks')}
    parts += [f'{key}={value!r}' for key, value in others.items()]
    return '; '.join(parts) or 'none (no reducer configured)'


def _model(runner: Runner):
    """The runner's model, out of its distributed wrapper."""
    from mmengine.model import is_model_wrapper
    return runner.model.module if is_model_wrapper(
        runner.model) else runner.model


def describe_runner_reduction(runner: Runner) -> str:
    """The token reduction of the runner's model: the config's, or for an
    exported file (``ExportedRecognizer``) what the file recorded."""
    runtime = getattr(_model(runner), 'runtime', None)
    if runtime is not None:
        return runtime.metadata.get(
            'token_reduction',
            f'as exported in {runtime.path} (not recorded in the file)')
    backbone = (runner.cfg.get('model') or {}).get('backbone') or {}
    return describe_reduction(backbone.get('token_reduction'))


def describe_fit(fit: checkpoint_fit.Fit) -> str:
    """How much of the model a load filled, and of the checkpoint it
    used."""
    parts = [fit.counts()]
    if fit.unloaded:
        parts.append(f'{len(fit.unloaded)} as initialised')
    if fit.unused:
        parts.append(f'{len(fit.unused)} of the checkpoint unused')
    return ', '.join(parts)


def describe_model(runner: Runner) -> str:
    """The model, its backbone, size and checkpoint."""
    model = _model(runner)
    cfg = runner.cfg.get('model') or {}
    backbone = cfg.get('backbone') or {}
    settings = ', '.join(f'{key} {backbone[key]}' for key in BACKBONE_KEYS
                         if key in backbone)
    line = f'model: {type(model).__name__}'
    runtime = getattr(model, 'runtime', None)
    if runtime is not None:  # an ExportedRecognizer: the file holds it all
        return f'{line}: {runtime.describe()}'
    if backbone:
        line += f", backbone {backbone.get('type', '?')}"
        if settings:
            line += f' ({settings})'
    parameters = sum(p.numel() for p in model.parameters())
    line += f', {parameters / 1e6:.2f} M parameters'
    fits = getattr(runner, 'checkpoint_fits', None)
    if fits:
        loads = '; '.join(f'{source} ({describe_fit(fit)})'
                          for source, fit in fits)
        how = 'resumed from' if runner.cfg.get('resume') else 'checkpoint'
        return line + f', {how} {loads}'
    checkpoint = runner.cfg.get('load_from')
    if runner.cfg.get('resume'):
        return line + f", resumed from {checkpoint or 'the latest checkpoint'}"
    return line + (f', checkpoint {checkpoint}' if checkpoint else
                   ', no checkpoint (weights as initialised)')


def describe_data(split: str, dataloader, distributed: bool = False) -> str:
    """How many clips of which annotation file ``split`` reads."""
    dataset = dataloader.dataset
    ann_file = getattr(dataset, 'ann_file', None)
    prefix = getattr(dataset, 'data_prefix', None) or {}
    where = f' of {ann_file}' if ann_file else ''
    if isinstance(prefix, dict) and prefix.get('video'):
        where += f" (videos in {prefix['video']})"
    return (f'{split}: {len(dataset)} clips{where}, {type(dataset).__name__}'
            f', batch size {dataloader.batch_size}'
            f"{' per process' if distributed else ''}")


def describe_processes(runner: Runner) -> Optional[str]:
    """The processes and backend of a distributed run (None otherwise)."""
    if not runner.distributed:
        return None
    import torch.distributed as dist
    return (f'distributed: {runner.world_size} processes, backend '
            f'{dist.get_backend()}, launcher {runner.launcher}')


class RunSummaryHook(Hook):
    """Logs what runs, before it runs: model, token reduction, data,
    processes and where the full log is (to the console of rank 0 and the
    log file)."""

    priority = 'VERY_LOW'

    def _summary(self, runner: Runner, data: List[str]) -> None:
        log_file = getattr(runner.logger, 'log_file', None)
        lines = [describe_model(runner),
                 'token reduction: ' + describe_runner_reduction(runner),
                 *data, describe_processes(runner),
                 log_file and f'full log (environment, config, hooks): '
                 f'{log_file}']
        for line in lines:
            if line:
                runner.logger.info(line)

    def before_train(self, runner) -> None:
        data = [describe_data('train data', runner.train_loop.dataloader,
                              runner.distributed)]
        if runner.val_loop is not None:
            data.append(describe_data('val data', runner.val_loop.dataloader,
                                      runner.distributed))
        self._summary(runner, data)

    def before_test(self, runner) -> None:
        self._summary(runner, [describe_data(
            'data', runner.test_loop.dataloader, runner.distributed)])


def build_runner(cfg, verbose: bool = False) -> Runner:
    """The Runner of ``cfg`` with the summary lines; its console leaves out
    the environment, config and hook order unless ``verbose``; its checkpoint
loads are checked (:class:`CheckedRunner`)."""
    runner = (CheckedRunner if verbose else QuietRunner).from_cfg(cfg)
    runner.register_hook(RunSummaryHook())
    return runner


def duration(seconds: float) -> str:
    """``seconds`` as a person reads them: tenths under 10 s, minutes from
    two (the progress lines of the sweep and the calibration)."""
    if seconds < 10:
        return f'{seconds:.1f} s'
    if seconds < 120:
        return f'{seconds:.0f} s'
    return f'{seconds / 60:.1f} min'
