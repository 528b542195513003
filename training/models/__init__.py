"""MIMO networks: a generic wrapper around an ordinary backbone, and the backbones."""

from training.models.backbones import BACKBONES, build_backbone
from training.models.mimo import MimoNetwork, build_network

__all__ = ["BACKBONES", "MimoNetwork", "build_backbone", "build_network"]
