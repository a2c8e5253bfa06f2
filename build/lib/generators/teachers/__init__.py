"""Who answers: the teacher contract (contract.py) and its backends, each importing torch,
transformers or an HTTP client lazily so that planning and config checks never pay for them."""
