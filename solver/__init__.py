"""Asymmetric multiway cut (AMWC) solvers on pixel grids.

``solve_amwc`` labels every node with a class and splits partitionable ("thing") classes into
instances; ``grid_graph`` and ``edge_maps_to_costs`` fix the edge order shared with the dataset
targets and the CNN boundary head. ``amwc_segments`` is the differentiable layer: segment masks
forward, perturbation (black-box) gradients for the costs backward.
"""

from cops.solver.api import AMWCResult, cuda_available, solve_amwc, solve_amwc_batch
from cops.solver.checks import amwc_objective, check_feasible
from cops.solver.graph import edge_costs_to_maps, edge_maps_to_costs, grid_graph, num_grid_edges
from cops.solver.layer import SegmentBatch, amwc_masks, amwc_segments, amwc_solve
from cops.solver.segments import segments_from_solution

__all__ = [
    "AMWCResult",
    "SegmentBatch",
    "amwc_masks",
    "amwc_objective",
    "amwc_segments",
    "amwc_solve",
    "check_feasible",
    "cuda_available",
    "edge_costs_to_maps",
    "edge_maps_to_costs",
    "grid_graph",
    "num_grid_edges",
    "segments_from_solution",
    "solve_amwc",
    "solve_amwc_batch",
]
