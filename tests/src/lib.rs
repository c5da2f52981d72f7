//! The conformance suite shared by every runtime (see `tests/`).
