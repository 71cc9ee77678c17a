"""The retrieval model: towers + heads (``RetrievalModel``), losses, masking and the model registry
(``create_model``)."""
