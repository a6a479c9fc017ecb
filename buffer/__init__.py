"""The signed local buffer: readings committed to SQLite, sealed into signed envelopes."""
