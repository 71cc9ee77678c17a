"""Video and text input: decoding, frame sampling, transforms, annotation datasets, the inference clip loader
and the synthetic vtr-shapes world."""
