"""`gpa-plan record`: run a program under ptrace and write the layouts its VMs really have."""
