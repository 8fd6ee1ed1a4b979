import os

# Must be set before torch/tblite/pyscf start their OpenMP runtimes (see DESIGN.md: spin-waiting threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
