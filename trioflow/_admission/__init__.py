"""Admission: who may run now. One kernel (``_kernel``), many faces."""
