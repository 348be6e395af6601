"""Free memory on a device, in bytes: what the data cache may fill (one small function, so tests pin it).

CUDA: `torch.cuda.mem_get_info` (the driver's free figure, other processes' use included). The
CPU: the kernel's `MemAvailable` (/proc/meminfo: free plus reclaimable page cache), else psutil's
`available`, else free pages x page size (os.sysconf), which undercounts the page cache.
"""

from __future__ import annotations

import os

import torch


def free_bytes(device: torch.device | str) -> int:
    """Bytes that can be allocated on `device` now."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        raise ValueError(f"free memory of a {device.type} device is not known here")
    return _host_available_bytes()


def _host_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
