//! The WGSL registry: every clipping shader is included here, and composed
//! into a module for a given number of gradient bindings.
//!
//! Kernels that touch gradients carry a block between `// @slot-begin` and
//! `// @slot-end` markers that is repeated once per gradient binding, with
//! `SLOT` replaced by the slot number and `SLOT_BINDING` by its binding
//! index. A line holding `// @slot-case ` is replaced by one copy of the
//! rest of that line per slot. WGSL cannot index bindings at run time, so
//! this is how one dispatch reads from several buffers.

/// Invocations per workgroup in every clipping kernel; mirrors `WG_SIZE` in
/// `shaders/clip_common.wgsl` (a test checks that they agree). 256 is the
/// WebGPU default limit, so every conforming device can run it.
pub const WORKGROUP_SIZE: u32 = 256;

/// The most gradient bindings one dispatch reads; fewer are used when the
/// device allows fewer storage buffers per shader stage.
pub const MAX_GRAD_SLOTS: u32 = 8;

/// Bindings before the first gradient binding: params, plan table, scratch.
pub(crate) const FIRST_GRAD_BINDING: u32 = 3;

const COMMON: &str = include_str!("../shaders/clip_common.wgsl");
const GRAD_VEC4: &str = include_str!("../shaders/grad_vec4.wgsl");
const GRAD_SCALAR: &str = include_str!("../shaders/grad_scalar.wgsl");
const CLIP_NORM: &str = include_str!("../shaders/clip_norm.wgsl");
const CLIP_SCALE: &str = include_str!("../shaders/clip_scale.wgsl");
const CLIP_VALUE: &str = include_str!("../shaders/clip_value.wgsl");
const CLIP_FINALIZE: &str = include_str!("../shaders/clip_finalize.wgsl");

/// A compute kernel of the clipping core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Per-chunk power sums (`clip_norm.wgsl`).
    Norm,
    /// Multiply by the group coefficient (`clip_scale.wgsl`).
    Scale,
    /// Clamp to `[-c, c]` (`clip_value.wgsl`).
    ClampValue,
    /// Group sums, norms and coefficients (`clip_finalize.wgsl`).
    Finalize,
}

impl Kernel {
    /// Every kernel, for tests and tooling.
    pub const ALL: [Kernel; 4] = [
        Kernel::Norm,
        Kernel::Scale,
        Kernel::ClampValue,
        Kernel::Finalize,
    ];

    /// Entry points of this kernel's module.
    pub fn entry_points(self) -> &'static [&'static str] {
        match self {
            Kernel::Norm => &["norm_partials"],
            Kernel::Scale => &["scale"],
            Kernel::ClampValue => &["clamp_values"],
            Kernel::Finalize => &["reduce_groups", "compute_coefficients", "finalize"],
        }
    }

    /// Whether the kernel binds gradient buffers.
    pub fn uses_grads(self) -> bool {
        self != Kernel::Finalize
    }

    fn body(self) -> &'static str {
        match self {
            Kernel::Norm => CLIP_NORM,
            Kernel::Scale => CLIP_SCALE,
            Kernel::ClampValue => CLIP_VALUE,
            Kernel::Finalize => CLIP_FINALIZE,
        }
    }
}

/// How a gradient binding is typed in WGSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GradAccess {
    /// `array<vec4<f32>>`: needs a binding length that is a multiple of 16.
    Vec4,
    /// `array<f32>`: any binding length that is a multiple of 4.
    Scalar,
}

/// Values of the `NORM_KIND` override constant.
pub(crate) mod norm_kind {
    pub const INF: u32 = 0;
    pub const L1: u32 = 1;
    pub const L2: u32 = 2;
    pub const GENERAL: u32 = 3;
}

/// The full WGSL source of `kernel` with `slots` gradient bindings typed by
/// `access`. `slots` is ignored for kernels that bind no gradients.
pub fn compose(kernel: Kernel, access: GradAccess, slots: u32) -> String {
    let mut out = String::from(COMMON);
    if kernel.uses_grads() {
        let grads = match access {
            GradAccess::Vec4 => GRAD_VEC4,
            GradAccess::Scalar => GRAD_SCALAR,
        };
        out.push_str(&expand_slots(grads, slots));
        out.push_str(&expand_slots(kernel.body(), slots));
    } else {
        out.push_str(kernel.body());
    }
    out
}

fn expand_slots(src: &str, slots: u32) -> String {
    let mut out = String::with_capacity(src.len() * slots as usize);
    let mut template: Option<String> = None;
    for line in src.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("// @slot-begin") {
            template = Some(String::new());
        } else if trimmed.starts_with("// @slot-end") {
            let block = template.take().unwrap_or_default();
            for slot in 0..slots {
                out.push_str(&substitute(&block, slot));
            }
        } else if let Some(block) = template.as_mut() {
            block.push_str(line);
            block.push('\n');
        } else if let Some(case) = trimmed.strip_prefix("// @slot-case ") {
            for slot in 0..slots {
                out.push_str(&substitute(case, slot));
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn substitute(text: &str, slot: u32) -> String {
    text.replace("SLOT_BINDING", &(FIRST_GRAD_BINDING + slot).to_string())
        .replace("SLOT", &slot.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_blocks_expand_per_slot() {
        let src = compose(Kernel::Norm, GradAccess::Vec4, 3);
        for slot in 0..3 {
            assert!(src.contains(&format!("fn norm_range_{slot}(")));
            assert!(src.contains(&format!("case {slot}u: {{ norm_range_{slot}(")));
            assert!(src.contains(&format!(
                "@binding({}) var<storage, read_write> grad_{slot}",
                slot + 3
            )));
        }
        assert!(!src.contains("norm_range_3("));
        assert!(!src.contains("SLOT"));
    }

    #[test]
    fn workgroup_size_matches_wgsl() {
        assert!(COMMON.contains(&format!("const WG_SIZE: u32 = {WORKGROUP_SIZE}u;")));
    }
}
