"""contraseg: contrastive multimodal MRI segmentation."""

__version__ = "0.1.0"
