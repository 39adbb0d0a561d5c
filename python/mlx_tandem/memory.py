"""Does a model (or one rank's share of it) fit in this machine's memory? Checked before loading, so
a model too large fails with the numbers instead of swapping or being killed by the OOM killer.

    check_fits(share_bytes, what="rank 0 (layers [0, 31))", hint="use --split stored")
    check_checkpoint(path, layer_range)       # single process: tdm.load / tandem generate

`available_bytes()` is the only place that asks the operating system (tests monkeypatch it). Setting
TANDEM_NO_MEMORY_CHECK=1 (or --no-memory-check, or memory_check=False) skips the check.
"""

from __future__ import annotations

import os
import sys

OVERRIDE_ENV = "TANDEM_NO_MEMORY_CHECK"
# room for the KV cache, activations and the allocator beside the weights: a fixed part for small
# models and a fraction for large ones (DeepSeek-V3's MLA cache is 70 KB per token, a Llama-70B
# bf16 cache 320 KB: 5% of a 350 GB share is ~17 GB, 50k-230k tokens)
MARGIN_FIXED = 1 << 30
MARGIN_FRACTION = 0.05
# macOS has no MemAvailable: hw.memsize minus what the system and other programs keep
MACOS_RESERVE_FIXED = 4 << 30
MACOS_RESERVE_FRACTION = 0.10


class NotEnoughMemory(ValueError):
    """The model's share does not fit in this machine's available memory."""


def _meminfo_available(path="/proc/meminfo") -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def available_bytes() -> int | None:
    """Memory a new process can use without swapping: Linux MemAvailable; macOS physical memory
    (sysctl hw.memsize, via sysconf) minus a reserve; None when unknown."""
    if sys.platform.startswith("linux"):
        return _meminfo_available()
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    if sys.platform == "darwin":
        total -= max(MACOS_RESERVE_FIXED, int(total * MACOS_RESERVE_FRACTION))
    return max(total, 0)


def fmt_bytes(b: int) -> str:
    """GB for model-sized figures, MB below 1 GB (test models)."""
    return f"{b / 1e9:.1f} GB" if abs(b) >= 1e9 else f"{b / 1e6:.2f} MB"


def need_bytes(share: int) -> int:
    """Memory needed to run a share of `share` resident weight bytes: the weights plus the margin."""
    return share + MARGIN_FIXED + int(share * MARGIN_FRACTION)


def check_enabled(enabled: bool = True) -> bool:
    return enabled and os.environ.get(OVERRIDE_ENV, "") in ("", "0")


def check_fits(share: int, what: str, hint: str, *, enabled: bool = True, available: int | None = None,
               log=None) -> None:
    """Raise NotEnoughMemory when need_bytes(share) exceeds the available memory (`available`, or
    available_bytes()). `what` names the share, `hint` says what to do instead."""
    if not check_enabled(enabled):
        return
    have = available if available is not None else available_bytes()
    need = need_bytes(share)
    if have is None:
        (log or _stderr)(f"memory check: {what} needs {fmt_bytes(need)}; this machine's available "
                         f"memory is unknown, not checked")
        return
    if need > have:
        raise NotEnoughMemory(
            f"memory check: {what} needs {fmt_bytes(need)} ({fmt_bytes(share)} of weights + "
            f"{fmt_bytes(need - share)} for the KV cache and activations), this machine has "
            f"{fmt_bytes(have)} available; {hint} (or skip this check with --no-memory-check / "
            f"{OVERRIDE_ENV}=1)")


def check_checkpoint(path: str, layer_range: tuple[int, int] | None = None, *, enabled: bool = True) -> None:
    """The check for a single process loading `layer_range` (default: all layers) of checkpoint `path`;
    reads only the safetensors headers. tdm.load calls it before load_model."""
    if not check_enabled(enabled):
        return
    from .checkpoint import Checkpoint
    from .pipeline import partition

    ckpt = Checkpoint(path)
    L = ckpt.config["num_hidden_layers"]
    lo, hi = layer_range or (0, L)
    tied = bool(ckpt.config.get("tie_word_embeddings", False))
    share = partition.share_bytes(partition.resident_bytes(ckpt), lo, hi, embed=lo == 0 or (hi == L and tied),
                                  head=hi == L)
    what = f"{os.path.basename(os.path.normpath(path))}" + (f" layers [{lo}, {hi})" if layer_range else "")
    check_fits(share, what, "use `tandem launch` to split it across two machines, or a machine with more memory",
               enabled=enabled)


def _stderr(msg):
    print(msg, file=sys.stderr, flush=True)
