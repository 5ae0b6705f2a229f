"""Mutants of the fixes made while type-checking the package (states that were possibly None,
keys of the wrong type)."""

from mutants import Mutant

MUTANTS = [
    Mutant(
        "image-key-bool-read-as-a-row",
        "neurotorch/fmri/stimuli.py",
        "        if isinstance(key, bool):\n"
        '            raise ParameterError(f"An image key is a name or a row number, got {key!r}.")\n',
        "",
        ("tests/test_fmri_stimuli.py::test_images_by_name",),
    ),
    Mutant(
        "lesion-model-predicts-without-weights",
        "neurotorch/models/lesion_network.py",
        "        if self.encoder is None or self.decoder is None or self.bias is None:\n"
        '            raise NotFittedError("LesionNetworkModel", "predict")\n',
        "",
        ("tests/test_connectome_data.py::test_datamodule_trains_with_plain_trainer",),
    ),
]
