"""The network side of the harness: vision experts, fusion strategies, projectors and the
multimodal LM. A library of torch modules with typed constructors; it knows nothing of specs,
jobs or tracking."""
