"""Progress bars for long work, shown only where someone watches: on a terminal (stderr), never in logs or pipes."""
import sys


def progress_bar(total, unit, description=None, show=True):
    """A tqdm bar of `total` steps (update() it), silent unless `show` and stderr is a terminal; it leaves no line
    behind once done."""
    from tqdm import tqdm
    return tqdm(total=total, unit=unit, desc=description, leave=False, disable=not (show and sys.stderr.isatty()))
