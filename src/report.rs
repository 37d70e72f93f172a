//! Readback: what a clip did, read asynchronously so it works where nothing
//! may block (the browser), and the power-sum format used to combine norms
//! across devices.

use crate::{Error, Norm, Result};

pub(crate) const FLAG_NAN: u32 = 1;
pub(crate) const FLAG_INF: u32 = 2;
pub(crate) const FLAG_SKIPPED: u32 = 4;

/// A group's sum of `|x|^p`, in the overflow-safe form the kernels use.
///
/// It stands for `2^(p * (exponent - 127)) * scaled_sum * 2^max(0, p - 90)`:
/// every element was scaled by a power of two before being raised to `p`,
/// so the sum is finite for any finite input. For [`Norm::Inf`],
/// `exponent` holds the bit pattern of the largest `|x|` and `scaled_sum`
/// is unused. This is the value to all-reduce when gradients are sharded
/// across devices: combine shards with [`PowerSum::combine`] (a sum for
/// finite `p`, a maximum for `Norm::Inf`).
///
/// On the GPU it is 16 bytes: `i32 exponent, f32 scaled_sum, u32 flags,
/// u32 padding`.
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct PowerSum {
    /// Biased exponent of the scale (0 for an empty sum), or for the max
    /// norm the bit pattern of the largest magnitude.
    pub exponent: i32,
    /// The scaled sum.
    pub scaled_sum: f32,
    /// Bit 0: a NaN was seen; bit 1: an infinity was seen.
    pub flags: u32,
    /// Always 0.
    pub padding: u32,
}

fn order(norm: Norm) -> Option<f64> {
    match norm {
        Norm::Inf => None,
        Norm::L2 => Some(2.0),
        Norm::P(p) => Some(f64::from(p)),
    }
}

/// `p - 90` for large `p`: the kernels divide `y^p` by `2^p_shift` so that
/// sums of huge powers stay in f32 range.
pub(crate) fn p_shift(p: f64) -> f64 {
    (p - 90.0).max(0.0)
}

impl PowerSum {
    /// Whether any element was NaN.
    pub fn has_nan(&self) -> bool {
        self.flags & FLAG_NAN != 0
    }

    /// Whether any element was infinite.
    pub fn has_inf(&self) -> bool {
        self.flags & FLAG_INF != 0
    }

    /// The norm this sum stands for, in f64 (exact up to the rounding of the
    /// sum itself, even where the f32 norm would overflow or flush to zero).
    pub fn norm(&self, norm: Norm) -> f64 {
        if self.has_nan() {
            return f64::NAN;
        }
        if self.has_inf() {
            return f64::INFINITY;
        }
        let Some(p) = order(norm) else {
            return f64::from(f32::from_bits(self.exponent as u32));
        };
        if self.scaled_sum == 0.0 {
            return 0.0;
        }
        let log2 =
            f64::from(self.exponent - 127) + ((f64::from(self.scaled_sum)).log2() + p_shift(p)) / p;
        log2.exp2()
    }

    /// Merges two sums over disjoint elements, as the kernels do.
    pub fn combine(&self, other: &PowerSum, norm: Norm) -> PowerSum {
        let flags = self.flags | other.flags;
        let exponent = self.exponent.max(other.exponent);
        let Some(p) = order(norm) else {
            return PowerSum {
                exponent,
                scaled_sum: 0.0,
                flags,
                padding: 0,
            };
        };
        let rescale = |e: i32| (p * f64::from(e - exponent)).exp2();
        let s = f64::from(self.scaled_sum) * rescale(self.exponent)
            + f64::from(other.scaled_sum) * rescale(other.exponent);
        PowerSum {
            exponent,
            scaled_sum: s as f32,
            flags,
            padding: 0,
        }
    }
}

/// What one group's clip saw and did.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupReport {
    /// The group's name, as given to the plan.
    pub name: String,
    /// The group's norm before clipping, from its power sum, in f64.
    pub norm: f64,
    /// The coefficient the group's gradients were multiplied by (1 means
    /// they were not written). In global mode, the total's coefficient.
    pub coefficient: f32,
    /// Whether the coefficient was not 1 (the gradients were rewritten).
    pub clipped: bool,
    /// Whether the group held NaN or infinity.
    pub nonfinite: bool,
    /// The raw sum behind `norm`.
    pub power_sum: PowerSum,
}

/// What a whole clip saw and did.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipReport {
    /// The norm over all groups together, before clipping (what PyTorch's
    /// `clip_grad_norm_` returns).
    pub total_norm: f64,
    /// The coefficient that follows from `total_norm`; the one applied to
    /// every group in global mode.
    pub total_coefficient: f32,
    /// One entry per group, in plan order.
    pub groups: Vec<GroupReport>,
    /// True when the error policy found a non-finite norm and left every
    /// gradient untouched.
    pub skipped: bool,
}

impl ClipReport {
    /// Names of the groups that held NaN or infinity.
    pub fn nonfinite_groups(&self) -> Vec<&str> {
        self.groups
            .iter()
            .filter(|g| g.nonfinite)
            .map(|g| g.name.as_str())
            .collect()
    }

    /// PyTorch's `error_if_nonfinite`: an error naming the non-finite
    /// groups, if any. Under the error policy their gradients are untouched.
    pub fn check_finite(&self) -> Result<()> {
        let groups: Vec<String> = self
            .nonfinite_groups()
            .into_iter()
            .map(String::from)
            .collect();
        if groups.is_empty() {
            Ok(())
        } else {
            Err(Error::NonFinite { groups })
        }
    }

    /// Whether any group's gradients were scaled.
    pub fn any_clipped(&self) -> bool {
        self.groups.iter().any(|g| g.clipped)
    }

    /// Decodes the readback: `n + 1` power sums then `n + 1` coefficient
    /// entries (norm, coefficient, flags, clipped), the last of each being
    /// the total.
    pub(crate) fn decode(bytes: &[u8], names: &[String], norm: Norm) -> ClipReport {
        let n = names.len();
        let words: &[u32] = bytemuck::cast_slice(bytes);
        let sums: &[PowerSum] = bytemuck::cast_slice(&words[..4 * (n + 1)]);
        let coefs = &words[4 * (n + 1)..];
        let entry = |g: usize| {
            (
                f32::from_bits(coefs[4 * g + 1]),
                coefs[4 * g + 2],
                coefs[4 * g + 3] != 0,
            )
        };
        let groups = names
            .iter()
            .enumerate()
            .map(|(g, name)| {
                let (coefficient, flags, clipped) = entry(g);
                GroupReport {
                    name: name.clone(),
                    norm: sums[g].norm(norm),
                    coefficient,
                    clipped,
                    nonfinite: flags & (FLAG_NAN | FLAG_INF) != 0,
                    power_sum: sums[g],
                }
            })
            .collect();
        let (total_coefficient, flags, _) = entry(n);
        ClipReport {
            total_norm: sums[n].norm(norm),
            total_coefficient,
            groups,
            skipped: flags & FLAG_SKIPPED != 0,
        }
    }

    pub(crate) fn empty() -> ClipReport {
        ClipReport {
            total_norm: 0.0,
            total_coefficient: 1.0,
            groups: Vec::new(),
            skipped: false,
        }
    }
}

/// Maps `buffer[..size]`, copies it out and unmaps. On native this polls the
/// device until the map completes; in the browser it only awaits.
pub(crate) async fn read_buffer(
    device: &wgpu::Device,
    buffer: &wgpu::Buffer,
    size: u64,
) -> Result<Vec<u8>> {
    let (tx, rx) = futures::channel::oneshot::channel();
    let slice = buffer.slice(..size);
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    #[cfg(not(target_arch = "wasm32"))]
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Wgpu(e.to_string()))?;
    #[cfg(target_arch = "wasm32")]
    let _ = device;
    rx.await
        .map_err(|_| Error::Readback("the map callback was dropped (device lost?)".into()))?
        .map_err(|e| Error::Readback(e.to_string()))?;
    let data = slice
        .get_mapped_range()
        .map_err(|e| Error::Readback(e.to_string()))?
        .to_vec();
    buffer.unmap();
    Ok(data)
}
