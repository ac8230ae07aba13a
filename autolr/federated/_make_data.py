"""Regenerate the bundled ``data/digits.npz`` (run once, by maintainers; needs scikit-learn).

``python -m autolr.federated._make_data`` writes the 1797 8x8 images of scikit-learn's
``load_digits`` as uint8 (pixel counts 0..16) with their labels, compressed (~45 KB). The data is
a copy of the test set of the UCI "Optical Recognition of Handwritten Digits" data set
(E. Alpaydin, C. Kaynak, 1998; https://doi.org/10.24432/C50P49), licensed CC BY 4.0 by the UCI
Machine Learning Repository; scikit-learn redistributes it under its BSD-3-Clause licence.
Nothing is downloaded: scikit-learn ships the file. Importing this module does nothing.
"""

from __future__ import annotations

from pathlib import Path

__all__: list[str] = []

SOURCE = (
    "scikit-learn load_digits: test set of the UCI Optical Recognition of Handwritten Digits "
    "data set (Alpaydin & Kaynak 1998, doi:10.24432/C50P49), CC BY 4.0"
)


def main(path: str | Path | None = None) -> Path:
    import numpy as np
    from sklearn.datasets import load_digits  # only the maintainer's script needs sklearn

    digits = load_digits()
    out = Path(path) if path is not None else Path(__file__).parent / "data" / "digits.npz"
    np.savez_compressed(
        out,
        x=digits.data.astype(np.uint8),
        y=digits.target.astype(np.uint8),
        source=np.array(SOURCE),
    )
    return out


if __name__ == "__main__":
    print(main())
