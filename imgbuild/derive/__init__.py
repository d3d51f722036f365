"""Derived images: targets made locally from other images (``from``: crop, trim, resize, matte,
format; ``sheet``: frames packed into one PNG with a JSON-hash atlas). Never a request, never paid.

- :mod:`.recipe` turns a ``from``/``sheet`` table into a :class:`~imgbuild.target.Target` (the
  manifest side: located errors, glob expansion, the recipe's params);
- :mod:`.ops` and :mod:`.sheet` make the bytes (Pillow; imported only in the workers);
- :mod:`.pool` runs them in a process pool beside the request queue.

A derived target is told apart by its params: ``params["derive"]`` is ``"from"`` or ``"sheet"``;
its ``images`` are the images it reads (so graph, stale outputs, caches and the fast path see them
as they see an edit's inputs), its prompt is empty.
"""

from __future__ import annotations

# Bump when the bytes we write for one recipe change (an operation, its rounding, the encoder
# settings): every derived target is then made again, free. Part of every derived spec.
RECIPE_VERSION = 1
RECIPE_MODEL = f"imgbuild-derive/{RECIPE_VERSION}"


class DeriveError(Exception):
    """What only the image shows: the target cannot be made from it (one line, with its real size).
    Raised in a worker, it reaches the executor as it is (its message is its only argument)."""
