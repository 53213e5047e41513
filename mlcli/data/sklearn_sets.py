"""Datasets that ship inside scikit-learn: no download, available offline."""

from __future__ import annotations

from mlcli.data.base import Dataset


def digits() -> Dataset:
    """Handwritten digits: 1797 grey 8×8 images (kept as 1×8×8 so CNNs can use them), 10 classes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return Dataset(
        name="digits",
        X=bunch.images.reshape(-1, 1, 8, 8),
        y=bunch.target,
        task="classification",
        class_names=[str(c) for c in bunch.target_names],
        source="scikit-learn load_digits (UCI optical recognition of handwritten digits)",
    )


def diabetes() -> Dataset:
    """Diabetes progression one year after baseline: 442 patients, 10 features, regression."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    return Dataset(
        name="diabetes",
        X=bunch.data,
        y=bunch.target,
        task="regression",
        feature_names=list(bunch.feature_names),
        source="scikit-learn load_diabetes (Efron et al. 2004)",
    )


def wine() -> Dataset:
    """Wine recognition: 178 wines, 13 chemical measurements, 3 cultivars."""
    from sklearn.datasets import load_wine

    bunch = load_wine()
    return Dataset(
        name="wine",
        X=bunch.data,
        y=bunch.target,
        task="classification",
        class_names=[str(c) for c in bunch.target_names],
        feature_names=list(bunch.feature_names),
        source="scikit-learn load_wine (UCI wine recognition)",
    )


def iris() -> Dataset:
    """Fisher's iris: 150 flowers, 4 measurements, 3 species."""
    from sklearn.datasets import load_iris

    bunch = load_iris()
    return Dataset(
        name="iris",
        X=bunch.data,
        y=bunch.target,
        task="classification",
        class_names=[str(c) for c in bunch.target_names],
        feature_names=list(bunch.feature_names),
        source="scikit-learn load_iris (Fisher 1936, UCI iris)",
    )


def breast_cancer() -> Dataset:
    """Wisconsin diagnostic breast cancer: 569 tumours, 30 features, malignant vs benign."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return Dataset(
        name="breast_cancer",
        X=bunch.data,
        y=bunch.target,
        task="classification",
        class_names=[str(c) for c in bunch.target_names],
        feature_names=list(bunch.feature_names),
        source="scikit-learn load_breast_cancer (UCI breast cancer Wisconsin, diagnostic)",
    )
