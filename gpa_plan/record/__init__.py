"""`gpa-plan record`: run a program under ptrace and write the layout its VMs really have."""
