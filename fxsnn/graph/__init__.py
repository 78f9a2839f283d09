"""Graph plumbing: tracing, editing + finish(), patterns (data), activation sites, rate-mode analysis."""
