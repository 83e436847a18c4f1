//! JSONL generators for end-to-end tests (in progress).
