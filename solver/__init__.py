"""Asymmetric multiway cut (AMWC) solvers on pixel grids.

``solve_amwc`` labels every node with a class and splits partitionable ("thing") classes into
instances; ``grid_graph`` and ``edge_maps_to_costs`` fix the edge order shared with the dataset
targets and the CNN boundary head.
"""

from .api import AMWCResult, cuda_available, solve_amwc, solve_amwc_batch
from .checks import amwc_objective, check_feasible
from .graph import edge_costs_to_maps, edge_maps_to_costs, grid_graph, num_grid_edges

__all__ = [
    "AMWCResult",
    "amwc_objective",
    "check_feasible",
    "cuda_available",
    "edge_costs_to_maps",
    "edge_maps_to_costs",
    "grid_graph",
    "num_grid_edges",
    "solve_amwc",
    "solve_amwc_batch",
]
