"""`gpa-plan verify`: build the VM a layout describes on the running kernel, make guest accesses
at probe points drawn from the partition, and hold every prediction to what KVM did.

`build.py` makes the plan (gpa_plan.probe.plan) and the predictions from a checked layout,
`compare.py` pairs them with the probe's results. The probe itself (gpa_plan.probe) predicts
nothing.
"""
