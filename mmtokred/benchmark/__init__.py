"""Side-by-side measurement of our backbone against stock MMAction2."""
from .compare import compare
from .flops import count_gflops
from .memory import peak_memory

__all__ = ['compare', 'count_gflops', 'peak_memory']
