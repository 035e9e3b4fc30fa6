"""The Triton models as source, and the code that writes and serves a model repository from them."""
