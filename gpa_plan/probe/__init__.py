"""The probe: what runs against ``/dev/kvm`` (`gpa-plan verify`, `gpa-plan host`).

Everything in this package uses the Python standard library alone (ctypes, fcntl, mmap,
struct, json), imports nothing from the rest of gpa_plan and only relative imports within
itself, so that `gpa-plan verify --export DIR` can copy it to a machine where gpa-plan is not
installed (an arm64 board, the initramfs of the arm64 test machine) and run it there as
``python3 -m probe plan.json``. It executes a plan (`plan.py`: the VM to build and the accesses
to make) and reports what KVM did; it predicts nothing. Predictions and the comparison live in
gpa_plan.verify.
"""
