"""The source task's data and network, shared by processes that ask for them at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from atcon.train import source


def test_two_builders_of_the_source_images_at_once_both_succeed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fashion_source: Callable[..., tuple[np.ndarray, np.ndarray]],
) -> None:
    """Two shards of an experiment used to collide on one ``.partial`` folder (one of them
    failed with "output folder is not empty")."""
    monkeypatch.setattr(
        source, "load_fashion_mnist", lambda split="train", root=None: fashion_source(n_per_class=6)
    )
    both_generating = threading.Barrier(2, timeout=60)
    real = source.generate_cluttered_fashion

    def generate(*args: object, **kw: object) -> object:
        both_generating.wait()  # the two builds overlap for certain
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(source, "generate_cluttered_fashion", generate)
    results: list[object] = []

    def build() -> None:
        try:
            results.append(source.fashion_singles(tmp_path, seed=0, size=0.01))
        except Exception as err:  # recorded, asserted below
            results.append(err)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = tmp_path / "fashion-singles-seed0-size0.01"
    assert results == [out, out]
    assert (out / "meta.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
