"""Docker engines sandcheck starts for a run (the docker and kind backends)."""
