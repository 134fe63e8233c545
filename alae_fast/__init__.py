"""alae_fast: fast training and inference of ALAE and StyleALAE.

Layers: ops -> nn -> models -> train/data -> cli. Import the submodule you need;
nothing heavy is imported here.
"""

__version__ = "0.1.0"
