"""`gpa-plan record`: the layouts a program builds with KVM, read from its system calls."""
