"""What this CPU is, as /proc/cpuinfo and cpufreq tell: its model name,
flags and clock (read by :mod:`.forward` to name the device and by
:mod:`.peak` to count its nominal peak)."""
from typing import Dict, Optional

_MAX_FREQ = '/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq'


def cpuinfo() -> Dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty elsewhere)."""
    fields: Dict[str, str] = {}
    try:
        with open('/proc/cpuinfo') as info:
            for line in info:
                key, _, value = line.partition(':')
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def max_ghz() -> Optional[float]:
    """The highest clock cpufreq reports, or None where it does not."""
    try:
        with open(_MAX_FREQ) as f:
            return int(f.read()) / 1e6  # kHz
    except (OSError, ValueError):
        return None


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo (and lscpu) give it."""
    return cpuinfo().get('model name', 'unknown CPU')
