"""FiftyOne remote model-zoo source of persam models (``manifest.json`` beside this file).

FiftyOne imports this file by path and calls its ``download_model`` / ``load_model``; both live in
:mod:`persam.integrations.fiftyone` (persam must be installed, with ``pip install "persam[fiftyone]"``).

>>> import fiftyone.zoo as foz                                                        # doctest: +SKIP
>>> model = foz.load_zoo_model("persam/sam_vit_b", concept="my_dog.persam")
"""

from persam.integrations.fiftyone import download_model, load_model

__all__ = ["download_model", "load_model"]
