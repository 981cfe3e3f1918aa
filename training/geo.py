"""Great-circle maths on latitude/longitude in degrees, in torch (the Earth radius of
``geo_assets.sphere``, OSV-5M's convention)."""

from __future__ import annotations

import torch

from geo_assets.sphere import EARTH_RADIUS_KM


def haversine_km(lat1_deg, lon1_deg, lat2_deg, lon2_deg) -> torch.Tensor:
    """Haversine distance in km, broadcasting over tensors of degrees.

    The intermediate ``a`` is clamped to [0, 1] so rounding never yields NaN at the antipodes.
    """
    lat1, lon1, lat2, lon2 = (torch.deg2rad(torch.as_tensor(x, dtype=torch.float64))
                              for x in (lat1_deg, lon1_deg, lat2_deg, lon2_deg))
    a = (torch.sin((lat2 - lat1) / 2) ** 2
         + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2)
    a = a.clamp(0.0, 1.0)
    return 2 * EARTH_RADIUS_KM * torch.atan2(torch.sqrt(a), torch.sqrt(1 - a))


def pairwise_haversine_km(points_a_deg: torch.Tensor, points_b_deg: torch.Tensor) -> torch.Tensor:
    """(N, 2) x (M, 2) lat/lon degrees -> (N, M) distances in km."""
    a = points_a_deg.to(torch.float64)
    b = points_b_deg.to(torch.float64)
    return haversine_km(a[:, None, 0], a[:, None, 1], b[None, :, 0], b[None, :, 1])


def spherical_mean_deg(points_deg: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean position on the sphere: (..., K, 2) points, (..., K) weights -> (..., 2).

    Averages unit vectors, so points on both sides of the antimeridian average correctly.
    """
    lat = torch.deg2rad(points_deg[..., 0].to(torch.float64))
    lon = torch.deg2rad(points_deg[..., 1].to(torch.float64))
    xyz = torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon),
                       torch.sin(lat)], dim=-1)
    mean = (xyz * weights.to(torch.float64)[..., None]).sum(dim=-2)
    out_lat = torch.atan2(mean[..., 2], torch.linalg.vector_norm(mean[..., :2], dim=-1))
    out_lon = torch.atan2(mean[..., 1], mean[..., 0])
    return torch.rad2deg(torch.stack([out_lat, out_lon], dim=-1))


def geoguessr_score(distance_km: torch.Tensor) -> torch.Tensor:
    """GeoGuessr points per image: 5000 * exp(-d / 1492.7)."""
    return 5000.0 * torch.exp(-distance_km / 1492.7)

