"""Where a run reports to: a tqdm bar over rendered images (images/s, ETA) and one line per generation."""
from __future__ import annotations

from typing import Callable, Optional


class Progress:
    def __init__(self, total: Optional[int], done: int = 0, enabled: Optional[bool] = None,
                 write: Callable[[str], None] = print):
        """``total``: images the run is expected to render in all (a budget, or an estimate updated as it goes);
        ``done``: rendered before (a resumed run); ``enabled=None``: a bar when the output is a terminal; lines are
        always written."""
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=done, unit="img", dynamic_ncols=True, smoothing=0.1,
                        disable=None if enabled is None else not enabled)
        self._write = write

    def set_generation(self, text: str) -> None:
        self.bar.set_description(text)

    def images(self, count: int) -> None:
        self.bar.update(count)

    def set_total(self, total: int) -> None:
        """A better estimate of the images the run will have rendered when it ends (the ETA follows)."""
        if total != self.bar.total:
            self.bar.total = total
            self.bar.refresh()

    def line(self, text: str) -> None:
        if self.bar.disable:
            self._write(text)
        else:
            self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
