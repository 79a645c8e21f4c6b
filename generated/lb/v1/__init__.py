"""Generated lb.v1 stubs; produced by `make protos`, never edited."""
