"""Asymmetric multiway cut (AMWC) solvers on pixel grids."""
