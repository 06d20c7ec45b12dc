"""pytest plugin for testing your own BPF objects with pytracers (entry point ``pytest11``)."""
