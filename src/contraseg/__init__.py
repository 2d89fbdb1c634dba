"""contraseg: contrastive multimodal MRI segmentation.

`contraseg.Segmenter(run).predict({"t1c": array, ...}, affine)` segments numpy arrays with a
trained run (see contraseg.api); the command line is `contraseg --help`.
"""

from contraseg._version import __version__

__all__ = ["Segmenter", "__version__"]


def __getattr__(name: str):
    if name == "Segmenter":  # imported on first use: `import contraseg` stays light
        from contraseg.api import Segmenter

        return Segmenter
    raise AttributeError(f"module 'contraseg' has no attribute {name!r}")
