"""Planning: placing ranges in a guest-physical address space."""
