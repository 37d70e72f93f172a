//! A CPU reference in f64, for tests and for callers who want to check a
//! device. It follows PyTorch's `clip_grad_norm_` semantics exactly.

use crate::Norm;

/// The p-norm of all elements of `views` together, computed in f64.
///
/// NaN if any element is NaN, otherwise infinity if any is infinite. Finite
/// inputs are scaled by their maximum first, so no intermediate overflows.
pub fn norm(views: &[&[f32]], norm: Norm) -> f64 {
    let mut max = 0.0f64;
    let mut nan = false;
    let mut inf = false;
    for &x in views.iter().flat_map(|v| v.iter()) {
        nan |= x.is_nan();
        inf |= x.is_infinite();
        if x.is_finite() {
            max = max.max(f64::from(x).abs());
        }
    }
    if nan {
        return f64::NAN;
    }
    if inf {
        return f64::INFINITY;
    }
    let p = match norm {
        Norm::Inf => return max,
        Norm::L2 => 2.0,
        Norm::P(p) => f64::from(p),
    };
    if max == 0.0 {
        return 0.0;
    }
    let sum: f64 = views
        .iter()
        .flat_map(|v| v.iter())
        .map(|&x| (f64::from(x).abs() / max).powf(p))
        .sum();
    max * sum.powf(1.0 / p)
}

/// Combines per-group norms into the norm over all groups: the p-norm of
/// the vector of group norms, or their maximum for `Norm::Inf`.
pub fn combine_norms(group_norms: &[f64], norm: Norm) -> f64 {
    if group_norms.iter().any(|n| n.is_nan()) {
        return f64::NAN;
    }
    let max = group_norms.iter().fold(0.0f64, |m, &n| m.max(n));
    if max.is_infinite() {
        return f64::INFINITY;
    }
    let p = match norm {
        Norm::Inf => return max,
        Norm::L2 => 2.0,
        Norm::P(p) => f64::from(p),
    };
    if max == 0.0 {
        return 0.0;
    }
    max * group_norms
        .iter()
        .map(|n| (n / max).powf(p))
        .sum::<f64>()
        .powf(1.0 / p)
}

/// PyTorch's clip coefficient: `min(1, max_norm / (norm + eps))`, NaN for
/// a NaN norm and 0 for an infinite one.
pub fn coefficient(norm: f64, max_norm: f32, eps: f32) -> f64 {
    if norm.is_nan() {
        return f64::NAN;
    }
    (f64::from(max_norm) / (norm + f64::from(eps))).min(1.0)
}
