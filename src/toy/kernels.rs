//! The toy model's compute kernels: their WGSL sources, the `#[repr(C)]`
//! twins of their uniform blocks, and the machinery that records a fixed
//! list of dispatches.
//!
//! Every kernel binds the same two storage buffers (the f32 arena `mem`,
//! typed as `vec4`s, and the per-step `ints`) plus one uniform block picked
//! by a dynamic offset. A model is therefore a list of
//! [`Dispatch`]es, written once into a [`Program`] and replayed each step:
//! recording a step allocates nothing and builds no bind group.

use std::collections::HashMap;
use std::sync::Mutex;

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use super::ToyError;

/// Invocations per workgroup in every toy kernel; mirrors `WG` in
/// `shaders/toy/common.wgsl` (a test checks that they agree). 256 is the
/// WebGPU default limit.
pub const WORKGROUP_SIZE: u32 = 256;

/// Marks an absent tensor offset or image slot; mirrors `NONE` in WGSL.
pub const NONE: u32 = u32::MAX;

/// Stride of the uniform blocks, the WebGPU default (and maximum)
/// `min_uniform_buffer_offset_alignment`.
pub const PARAMS_STRIDE: u64 = 256;

/// Invocations per workgroup of the attention kernels; mirrors `AWG`.
pub const ATTENTION_WORKGROUP_SIZE: u32 = 64;

/// Longest attention sequence (queries or keys); mirrors `MAX_T`.
pub const MAX_ATTENTION_LEN: u32 = 32;
/// Largest attention head width; mirrors `MAX_DH`.
pub const MAX_HEAD_DIM: u32 = 16;
/// Side of the output tile one [`Kernel::Linear`] invocation computes;
/// mirrors `TILE`.
pub const LINEAR_TILE: u32 = 8;
/// Invocations per workgroup of [`Kernel::Linear`]; mirrors `LWG` there.
pub const LINEAR_WORKGROUP_SIZE: u32 = 64;
/// Lanes per subgroup that the subgroup kernels ([`Kernel::needs_subgroups`])
/// are written for; they run only where subgroups are exactly this wide.
/// Attention launches need `tq` (and, backward, `tk`) to be multiples of
/// it. Mirrors `SG_LANES` in `subgroup_common.wgsl`.
pub const SUBGROUP_LANES: u32 = 8;
/// Rows of y each lane of [`Kernel::LinearSubgroup`] computes; mirrors
/// `SG_ROWS`.
pub const LINEAR_SUBGROUP_ROWS: u32 = 4;
/// Columns of y each subgroup of [`Kernel::LinearSubgroup`] computes; a
/// launch needs `n` to be a multiple of it. Mirrors `SG_COLS`.
pub const LINEAR_SUBGROUP_COLS: u32 = 16;
/// Rows (n) and columns (k) of dW each subgroup of
/// [`Kernel::LinearGradWeightSubgroup`] computes; a launch needs n and k to
/// be multiples of them. Mirror `GSG_ROWS * SG_LANES` and `GSG_COLS`.
pub const GRAD_WEIGHT_SUBGROUP_BLOCK: [u32; 2] = [32, 16];
/// Invocations per workgroup of [`Kernel::LinearGradWeight`]; mirrors `LWG`
/// there. Small, because a 64 x 64 weight has only 64 tiles and every CPU
/// core needs a workgroup of its own.
pub const GRAD_WEIGHT_WORKGROUP_SIZE: u32 = 16;

const COMMON: &str = include_str!("../../shaders/toy/common.wgsl");
const LINEAR: &str = include_str!("../../shaders/toy/linear.wgsl");
const GRAD_WEIGHT: &str = include_str!("../../shaders/toy/linear_grad_weight.wgsl");
const ATTENTION_COMMON: &str = include_str!("../../shaders/toy/attention_common.wgsl");
const SUBGROUP_COMMON: &str = include_str!("../../shaders/toy/subgroup_common.wgsl");

/// A compute kernel of the toy model; each is one file in `shaders/toy/`
/// with one entry point of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `linear.wgsl`: matmul with fused GELU / residual / add.
    Linear,
    /// `linear_subgroup.wgsl`: the same product, for CPU drivers with
    /// 8-lane subgroups. [`Program::new`] runs [`Kernel::Linear`] launches
    /// on it when [`Kernels::uses_subgroups`] and `n` allows; likewise for
    /// the other `*Subgroup` kernels and their portable twins.
    LinearSubgroup,
    /// `linear_grad_weight.wgsl`: dW = dy^T x.
    LinearGradWeight,
    /// `linear_grad_weight_subgroup.wgsl`: the same, for CPU drivers with
    /// 8-lane subgroups, as [`Kernel::LinearSubgroup`] is for `Linear`.
    LinearGradWeightSubgroup,
    /// `layer_norm.wgsl`: standalone LayerNorm forward.
    LayerNorm,
    /// `layer_norm_backward.wgsl`: LayerNorm input gradient.
    LayerNormBackward,
    /// `layer_norm_grad_params.wgsl`: LayerNorm weight and bias gradients.
    LayerNormGradParams,
    /// `attention.wgsl`: the three attention variants, forward.
    Attention,
    /// `attention_backward.wgsl`: their gradients.
    AttentionBackward,
    /// `attention_subgroup.wgsl`: [`Kernel::Attention`] for CPU drivers
    /// with 8-lane subgroups.
    AttentionSubgroup,
    /// `attention_backward_subgroup.wgsl`: [`Kernel::AttentionBackward`]
    /// for CPU drivers with 8-lane subgroups.
    AttentionBackwardSubgroup,
    /// `embedding.wgsl`: token plus position embedding.
    Embedding,
    /// `embedding_backward.wgsl`: masked scatter-add of the embedding gradient.
    EmbeddingBackward,
    /// `cross_entropy.wgsl`: loss and logit gradient with ignored rows.
    CrossEntropy,
    /// `adamw.wgsl`: the optimizer step.
    AdamW,
    /// `gate_backward.wgsl`: gradient of a tanh gate.
    GateBackward,
    /// `sum_rows.wgsl`: gradient of a broadcast table.
    SumRows,
    /// `gather_rows.wgsl`: cached image features into a batch.
    GatherRows,
    /// `vision_embed.wgsl`: class token and positions of the vision encoder.
    VisionEmbed,
}

impl Kernel {
    /// Every kernel, for pipeline creation and the validation test.
    pub const ALL: [Kernel; 19] = [
        Kernel::Linear,
        Kernel::LinearSubgroup,
        Kernel::LayerNormBackward,
        Kernel::LinearGradWeight,
        Kernel::LinearGradWeightSubgroup,
        Kernel::LayerNorm,
        Kernel::LayerNormGradParams,
        Kernel::Attention,
        Kernel::AttentionBackward,
        Kernel::AttentionSubgroup,
        Kernel::AttentionBackwardSubgroup,
        Kernel::Embedding,
        Kernel::EmbeddingBackward,
        Kernel::CrossEntropy,
        Kernel::AdamW,
        Kernel::GateBackward,
        Kernel::SumRows,
        Kernel::GatherRows,
        Kernel::VisionEmbed,
    ];

    /// The entry point, which is also the file name without `.wgsl`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Linear => "linear",
            Kernel::LinearSubgroup => "linear_subgroup",
            Kernel::LayerNormBackward => "layer_norm_backward",
            Kernel::LinearGradWeight => "linear_grad_weight",
            Kernel::LinearGradWeightSubgroup => "linear_grad_weight_subgroup",
            Kernel::LayerNorm => "layer_norm",
            Kernel::LayerNormGradParams => "layer_norm_grad_params",
            Kernel::Attention => "attention",
            Kernel::AttentionBackward => "attention_backward",
            Kernel::AttentionSubgroup => "attention_subgroup",
            Kernel::AttentionBackwardSubgroup => "attention_backward_subgroup",
            Kernel::Embedding => "embedding",
            Kernel::EmbeddingBackward => "embedding_backward",
            Kernel::CrossEntropy => "cross_entropy",
            Kernel::AdamW => "adamw",
            Kernel::GateBackward => "gate_backward",
            Kernel::SumRows => "sum_rows",
            Kernel::GatherRows => "gather_rows",
            Kernel::VisionEmbed => "vision_embed",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Kernel::Linear => LINEAR,
            Kernel::LinearSubgroup => include_str!("../../shaders/toy/linear_subgroup.wgsl"),
            Kernel::LayerNormBackward => include_str!("../../shaders/toy/layer_norm_backward.wgsl"),
            Kernel::LinearGradWeight => GRAD_WEIGHT,
            Kernel::LinearGradWeightSubgroup => {
                include_str!("../../shaders/toy/linear_grad_weight_subgroup.wgsl")
            }
            Kernel::LayerNorm => include_str!("../../shaders/toy/layer_norm.wgsl"),
            Kernel::LayerNormGradParams => {
                include_str!("../../shaders/toy/layer_norm_grad_params.wgsl")
            }
            Kernel::Attention => include_str!("../../shaders/toy/attention.wgsl"),
            Kernel::AttentionBackward => include_str!("../../shaders/toy/attention_backward.wgsl"),
            Kernel::AttentionSubgroup => include_str!("../../shaders/toy/attention_subgroup.wgsl"),
            Kernel::AttentionBackwardSubgroup => {
                include_str!("../../shaders/toy/attention_backward_subgroup.wgsl")
            }
            Kernel::Embedding => include_str!("../../shaders/toy/embedding.wgsl"),
            Kernel::EmbeddingBackward => include_str!("../../shaders/toy/embedding_backward.wgsl"),
            Kernel::CrossEntropy => include_str!("../../shaders/toy/cross_entropy.wgsl"),
            Kernel::AdamW => include_str!("../../shaders/toy/adamw.wgsl"),
            Kernel::GateBackward => include_str!("../../shaders/toy/gate_backward.wgsl"),
            Kernel::SumRows => include_str!("../../shaders/toy/sum_rows.wgsl"),
            Kernel::GatherRows => include_str!("../../shaders/toy/gather_rows.wgsl"),
            Kernel::VisionEmbed => include_str!("../../shaders/toy/vision_embed.wgsl"),
        }
    }

    /// The WGSL override constants of pipeline `variant` (see
    /// [`Dispatch::variant`]). `Linear` is specialised on its weight layout,
    /// prologue, epilogue and flags, `LinearGradWeight` on whether it
    /// accumulates, and the attention kernels on their mask: CPU drivers
    /// run both sides of every branch under a mask, so a kernel that chose
    /// its mode at run time paid for all of them.
    pub fn constants(self, variant: u32) -> Vec<(&'static str, f64)> {
        match self {
            Kernel::Linear | Kernel::LinearSubgroup => vec![
                ("W_T", f64::from(variant & 1)),
                ("PRO", f64::from(variant >> 1 & 3)),
                ("EPI", f64::from(variant >> 3 & 3)),
                ("FLAGS", f64::from(variant >> 8 & 0xff)),
            ],
            Kernel::LinearGradWeight | Kernel::LinearGradWeightSubgroup => {
                vec![("ACCUMULATE", f64::from(variant & 1))]
            }
            Kernel::Attention
            | Kernel::AttentionBackward
            | Kernel::AttentionSubgroup
            | Kernel::AttentionBackwardSubgroup => vec![("MODE", f64::from(variant))],
            _ => Vec::new(),
        }
    }

    /// Whether the kernel uses subgroup operations, so that its module
    /// can only be built on a device with [`wgpu::Features::SUBGROUP`].
    pub fn needs_subgroups(self) -> bool {
        self.base().is_some()
    }

    /// The portable kernel whose launches a subgroup kernel takes over.
    fn base(self) -> Option<Kernel> {
        match self {
            Kernel::LinearSubgroup => Some(Kernel::Linear),
            Kernel::LinearGradWeightSubgroup => Some(Kernel::LinearGradWeight),
            Kernel::AttentionSubgroup => Some(Kernel::Attention),
            Kernel::AttentionBackwardSubgroup => Some(Kernel::AttentionBackward),
            _ => None,
        }
    }

    /// The full WGSL module: the shared prelude (`common.wgsl`, then
    /// `attention_common.wgsl` for the attention kernels), then the
    /// kernel's file. A subgroup kernel also gets `subgroup_common.wgsl`,
    /// and its portable twin's file before its own, whose uniform block,
    /// overrides and helpers it shares.
    pub fn source(self) -> String {
        let portable = self.base().unwrap_or(self);
        let mut out = format!("{COMMON}\n");
        if matches!(portable, Kernel::Attention | Kernel::AttentionBackward) {
            out += ATTENTION_COMMON;
            out += "\n";
        }
        if portable != self {
            out += SUBGROUP_COMMON;
            out += "\n";
            out += portable.body();
            out += "\n";
        }
        out + self.body()
    }
}

/// Row addressing of a logical `[rows, width]` tensor in the arena: row `r`
/// starts at `off + (r / rpg) * gstride + (r % rpg) * rstride` (elements).
/// Twin of `RowMap` in `common.wgsl`. Kernels that read `vec4`s need every
/// offset and stride to be a multiple of 4.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct RowMap {
    /// Element offset of row 0.
    pub off: u32,
    /// Distance between groups of rows.
    pub gstride: u32,
    /// Rows per group.
    pub rpg: u32,
    /// Distance between rows inside a group.
    pub rstride: u32,
}

impl RowMap {
    /// Rows of `width` elements packed one after another from `off`.
    pub fn dense(off: u32, width: u32) -> Self {
        Self {
            off,
            gstride: 0,
            rpg: u32::MAX,
            rstride: width,
        }
    }

    /// Groups of `rpg` rows, `rstride` apart, each group `gstride` apart.
    pub fn grouped(off: u32, rpg: u32, gstride: u32, rstride: u32) -> Self {
        Self {
            off,
            gstride,
            rpg,
            rstride,
        }
    }

    /// An absent tensor (its kernel must not touch it).
    pub fn none() -> Self {
        Self {
            off: NONE,
            gstride: 0,
            rpg: u32::MAX,
            rstride: 0,
        }
    }

    /// Element offset of row `r`, as the kernels compute it.
    pub fn row(&self, r: u32) -> u32 {
        self.off + (r / self.rpg) * self.gstride + (r % self.rpg) * self.rstride
    }

    fn vec4_aligned(&self) -> bool {
        self.off == NONE
            || (self.off.is_multiple_of(4)
                && self.gstride.is_multiple_of(4)
                && self.rstride.is_multiple_of(4))
    }
}

/// What a [`LinearParams`] does to the product before the epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Prologue {
    /// Nothing.
    None = 0,
    /// Multiply by `tanh(gate)`: the gradient entering a gated branch.
    Gate = 2,
}

/// What a [`LinearParams`] does with each product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Epilogue {
    /// `y = acc`, plus `add` with [`linear_flags::ADD`], plus the old `y`
    /// with [`linear_flags::ACCUM`].
    Store = 0,
    /// `aux = acc; y = gelu(acc)`.
    Gelu = 1,
    /// `y = acc * gelu'(aux)`.
    GeluBackward = 2,
    /// `y = res + tanh(gate) * acc` (gate 1 when `gate_off` is NONE);
    /// `aux = acc` with [`linear_flags::AUX`].
    Residual = 3,
}

/// Flag bit `F_VEC4` of `linear.wgsl`, set by [`Dispatch::linear`] when
/// every output-side tensor is vec4-aligned, so that the epilogue moves
/// whole vec4s.
const LINEAR_VEC4_OUT: u32 = 16;

/// Bits of [`LinearParams::flags`].
pub mod linear_flags {
    /// Add `add` to the output (store epilogue).
    pub const ADD: u32 = 2;
    /// Accumulate into `y` (store epilogue).
    pub const ACCUM: u32 = 4;
    /// Save the branch output to `aux` (residual epilogue).
    pub const AUX: u32 = 8;
}

/// Twin of `Params` in `linear.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct LinearParams {
    pub x: RowMap,
    pub y: RowMap,
    pub aux: RowMap,
    pub res: RowMap,
    pub ln_x: RowMap,
    pub add: RowMap,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub rows: u32,
    pub w_off: u32,
    pub w_t: u32,
    pub pro: u32,
    pub epi: u32,
    pub gate_off: u32,
    pub gamma_off: u32,
    pub beta_off: u32,
    pub stats_off: u32,
    pub eps: f32,
    pub flags: u32,
    pub _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<LinearParams>() == 160);

impl LinearParams {
    /// `y = x W^T` for `x: [m, k]`, `W: [n, k]` at `w_off`, `y: [m, n]`;
    /// set the other fields for fused work.
    pub fn new(m: u32, k: u32, n: u32, x: RowMap, w_off: u32, y: RowMap) -> Self {
        Self {
            x,
            y,
            aux: RowMap::none(),
            res: RowMap::none(),
            ln_x: RowMap::none(),
            add: RowMap::none(),
            m,
            n,
            k,
            rows: 0,
            w_off,
            w_t: 0,
            pro: Prologue::None as u32,
            epi: Epilogue::Store as u32,
            gate_off: NONE,
            gamma_off: NONE,
            beta_off: NONE,
            stats_off: NONE,
            eps: 1e-5,
            flags: 0,
            _pad: [0; 2],
        }
    }

    /// `y = x W` for `x: [m, k]` and `W: [k, n]` stored at `w_off`: the
    /// input gradient of a layer whose weight is `[k, n]` (PyTorch layout).
    pub fn transposed(m: u32, k: u32, n: u32, x: RowMap, w_off: u32, y: RowMap) -> Self {
        Self {
            w_t: 1,
            ..Self::new(m, k, n, x, w_off, y)
        }
    }
}

/// Twin of `Params` in `linear_grad_weight.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct LinearGradWeightParams {
    pub dy: RowMap,
    pub x: RowMap,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub dw_off: u32,
    pub gate_off: u32,
    pub accumulate: u32,
    pub _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<LinearGradWeightParams>() == 64);

/// Twin of `Params` in `layer_norm.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct LayerNormParams {
    pub x: RowMap,
    pub y: RowMap,
    pub m: u32,
    pub n: u32,
    pub gamma_off: u32,
    pub beta_off: u32,
    pub stats_off: u32,
    pub eps: f32,
    pub _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<LayerNormParams>() == 64);

/// Twin of `Params` in `layer_norm_backward.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct LayerNormBackwardParams {
    pub dy: RowMap,
    pub x: RowMap,
    pub dx: RowMap,
    /// Added to `dx`; [`RowMap::none`] for no residual.
    pub res: RowMap,
    pub m: u32,
    pub n: u32,
    pub gamma_off: u32,
    pub stats_off: u32,
}
const _: () = assert!(std::mem::size_of::<LayerNormBackwardParams>() == 80);

/// Twin of `Params` in `layer_norm_grad_params.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct LayerNormGradParams {
    pub dy: RowMap,
    pub x: RowMap,
    pub m: u32,
    pub n: u32,
    pub stats_off: u32,
    pub dgamma_off: u32,
    pub dbeta_off: u32,
    pub accumulate: u32,
    pub _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<LayerNormGradParams>() == 64);

/// The three attention masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum AttentionMask {
    /// Every query sees every key (Perceiver).
    None = 0,
    /// Causal, and keys at or past the sequence length are hidden.
    Causal = 1,
    /// OpenFlamingo's immediate-media mask over image slots.
    Media = 2,
}

/// Twin of `Params` in `attention.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct AttentionParams {
    pub q_off: u32,
    pub q_rs: u32,
    pub k_off: u32,
    pub k_rs: u32,
    pub v_off: u32,
    pub v_rs: u32,
    pub o_off: u32,
    pub o_rs: u32,
    pub p_off: u32,
    pub tq: u32,
    pub tk: u32,
    pub dh: u32,
    pub heads: u32,
    pub mode: u32,
    pub scale: f32,
    pub len_off: u32,
    pub time_off: u32,
    pub slot_off: u32,
    pub media: u32,
    pub latents: u32,
}
const _: () = assert!(std::mem::size_of::<AttentionParams>() == 80);

/// Twin of `Params` in `attention_backward.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct AttentionBackwardParams {
    pub q_off: u32,
    pub q_rs: u32,
    pub k_off: u32,
    pub k_rs: u32,
    pub v_off: u32,
    pub v_rs: u32,
    pub o_off: u32,
    pub o_rs: u32,
    pub p_off: u32,
    pub tq: u32,
    pub tk: u32,
    pub dh: u32,
    pub heads: u32,
    pub mode: u32,
    pub scale: f32,
    pub slot_off: u32,
    pub media: u32,
    pub latents: u32,
    pub do_off: u32,
    pub dq_off: u32,
    pub dk_off: u32,
    pub dv_off: u32,
    pub _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<AttentionBackwardParams>() == 96);

impl AttentionBackwardParams {
    /// The backward of `fwd`, with output gradient at `do_off` (laid out as
    /// the output) and input gradients at `dq_off`, `dk_off`, `dv_off` (laid
    /// out as q, k, v).
    pub fn of(fwd: &AttentionParams, do_off: u32, dq_off: u32, dk_off: u32, dv_off: u32) -> Self {
        Self {
            q_off: fwd.q_off,
            q_rs: fwd.q_rs,
            k_off: fwd.k_off,
            k_rs: fwd.k_rs,
            v_off: fwd.v_off,
            v_rs: fwd.v_rs,
            o_off: fwd.o_off,
            o_rs: fwd.o_rs,
            p_off: fwd.p_off,
            tq: fwd.tq,
            tk: fwd.tk,
            dh: fwd.dh,
            heads: fwd.heads,
            mode: fwd.mode,
            scale: fwd.scale,
            slot_off: fwd.slot_off,
            media: fwd.media,
            latents: fwd.latents,
            do_off,
            dq_off,
            dk_off,
            dv_off,
            _pad: [0; 2],
        }
    }
}

/// Twin of `Params` in `embedding.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct EmbeddingParams {
    pub tok_off: u32,
    pub m: u32,
    pub n: u32,
    pub t: u32,
    pub wte_off: u32,
    pub wpe_off: u32,
    pub x_off: u32,
    pub vocab: u32,
}

/// Twin of `Params` in `embedding_backward.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct EmbeddingBackwardParams {
    pub tok_off: u32,
    pub m: u32,
    pub n: u32,
    pub dx_off: u32,
    pub dwte_off: u32,
    pub all_rows: u32,
    pub n_allowed: u32,
    pub _pad: u32,
    pub allowed: [u32; 4],
}
const _: () = assert!(std::mem::size_of::<EmbeddingBackwardParams>() == 48);

/// Twin of `Params` in `cross_entropy.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct CrossEntropyParams {
    pub logits_off: u32,
    pub m: u32,
    pub vocab: u32,
    pub tgt_off: u32,
    pub valid_off: u32,
    pub loss_off: u32,
    pub dlogits_off: u32,
    pub _pad: u32,
}

/// Twin of `Params` in `adamw.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct AdamWParams {
    pub n: u32,
    pub p_off: u32,
    pub g_off: u32,
    pub m_off: u32,
    pub v_off: u32,
    pub decay_from: u32,
    pub step_off: u32,
    pub _pad: u32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}
const _: () = assert!(std::mem::size_of::<AdamWParams>() == 48);

/// Twin of `Params` in `gate_backward.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct GateBackwardParams {
    pub dy: RowMap,
    pub f: RowMap,
    pub m: u32,
    pub n: u32,
    pub gate_off: u32,
    pub grad_off: u32,
}
const _: () = assert!(std::mem::size_of::<GateBackwardParams>() == 48);

/// Twin of `Params` in `sum_rows.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct SumRowsParams {
    pub x_off: u32,
    pub groups: u32,
    pub rows: u32,
    pub n: u32,
    pub y_off: u32,
    pub accumulate: u32,
    pub _pad: [u32; 2],
}

/// Twin of `Params` in `gather_rows.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct GatherRowsParams {
    pub x_off: u32,
    pub y_off: u32,
    pub idx_off: u32,
    pub slots: u32,
    pub block: u32,
    pub _pad: [u32; 3],
}

/// Twin of `Params` in `vision_embed.wgsl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct VisionEmbedParams {
    pub x_off: u32,
    pub images: u32,
    pub tokens: u32,
    pub n: u32,
    pub cls_off: u32,
    pub pos_off: u32,
    pub _pad: [u32; 2],
}

/// One recorded kernel launch: which kernel, its uniform block and its grid.
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// The kernel.
    pub kernel: Kernel,
    /// Its uniform block (at most [`PARAMS_STRIDE`] bytes).
    pub params: Vec<u8>,
    /// Workgroups in x and y.
    pub grid: [u32; 2],
    /// Which specialisation of the kernel's pipeline runs it (see
    /// [`Kernel::constants`]); 0 for kernels that have one pipeline.
    pub variant: u32,
}

/// A grid of `wgs` workgroups that stays under WebGPU's 65535 per dimension;
/// 1-D kernels fold the y index back in.
fn grid_1d(threads: u32) -> [u32; 2] {
    let wgs = threads.div_ceil(WORKGROUP_SIZE).max(1);
    if wgs <= 65535 {
        [wgs, 1]
    } else {
        [65535, wgs.div_ceil(65535)]
    }
}

impl Dispatch {
    fn new<P: Pod>(kernel: Kernel, params: &P, grid: [u32; 2]) -> Self {
        Self {
            kernel,
            params: bytemuck::bytes_of(params).to_vec(),
            grid,
            variant: 0,
        }
    }

    /// The uniform block read back as `P`, or None when its size is not
    /// `P`'s; the caller matches `P` to [`Dispatch::kernel`].
    fn params_as<P: Pod>(&self) -> Option<P> {
        bytemuck::try_pod_read_unaligned(&self.params).ok()
    }

    /// The multiply-adds of a matrix product (`m * n * k` of a
    /// [`Kernel::Linear`] or [`Kernel::LinearGradWeight`]); 0 for other
    /// kernels, or for a uniform block of the wrong size. Benchmarks use it
    /// to relate a step's time to its work.
    pub fn multiply_adds(&self) -> u64 {
        let dims = match self.kernel {
            Kernel::Linear => self.params_as::<LinearParams>().map(|p| (p.m, p.n, p.k)),
            Kernel::LinearGradWeight => self
                .params_as::<LinearGradWeightParams>()
                .map(|p| (p.m, p.n, p.k)),
            _ => None,
        };
        dims.map_or(0, |(m, n, k)| u64::from(m) * u64::from(n) * u64::from(k))
    }

    /// A [`Kernel::Linear`] launch. `n` must be a multiple of 8, `k` of 4,
    /// and `x` rows and `w_off` 4-aligned.
    pub fn linear(p: LinearParams) -> Self {
        debug_assert!(
            p.x.vec4_aligned() && p.n.is_multiple_of(LINEAR_TILE) && p.k.is_multiple_of(4)
        );
        debug_assert!(p.w_off.is_multiple_of(4));
        let tiles = p.m.div_ceil(LINEAR_TILE) * (p.n / LINEAR_TILE);
        let mut flags = p.flags;
        if [p.y, p.aux, p.res, p.add].iter().all(RowMap::vec4_aligned) {
            flags |= LINEAR_VEC4_OUT;
        }
        let mut d = Self::new(
            Kernel::Linear,
            &p,
            [tiles.div_ceil(LINEAR_WORKGROUP_SIZE).max(1), 1],
        );
        d.variant = (p.w_t & 1) | (p.pro & 3) << 1 | (p.epi & 3) << 3 | (flags & 0xff) << 8;
        d
    }

    /// A [`Kernel::LayerNormBackward`] launch.
    pub fn layer_norm_backward(p: LayerNormBackwardParams) -> Self {
        Self::new(Kernel::LayerNormBackward, &p, grid_1d(p.m))
    }

    /// A [`Kernel::LinearGradWeight`] launch. `n` and `k` must be multiples
    /// of 8, and `dy` and `x` rows 4-aligned.
    pub fn linear_grad_weight(p: LinearGradWeightParams) -> Self {
        debug_assert!(p.n.is_multiple_of(LINEAR_TILE) && p.k.is_multiple_of(LINEAR_TILE));
        debug_assert!(p.dy.vec4_aligned() && p.x.vec4_aligned() && p.dw_off.is_multiple_of(4));
        let tiles = (p.n / LINEAR_TILE) * (p.k / LINEAR_TILE);
        let mut d = Self::new(
            Kernel::LinearGradWeight,
            &p,
            [tiles.div_ceil(GRAD_WEIGHT_WORKGROUP_SIZE).max(1), 1],
        );
        d.variant = u32::from(p.accumulate != 0);
        d
    }

    /// A [`Kernel::LayerNorm`] launch.
    pub fn layer_norm(p: LayerNormParams) -> Self {
        Self::new(Kernel::LayerNorm, &p, grid_1d(p.m))
    }

    /// A [`Kernel::LayerNormGradParams`] launch.
    pub fn layer_norm_grad_params(p: LayerNormGradParams) -> Self {
        Self::new(Kernel::LayerNormGradParams, &p, [p.n.div_ceil(64), 1])
    }

    /// A [`Kernel::Attention`] launch over `batch` sequences.
    pub fn attention(p: AttentionParams, batch: u32) -> Self {
        let x = (p.heads * p.tq).div_ceil(ATTENTION_WORKGROUP_SIZE);
        let mut d = Self::new(Kernel::Attention, &p, [x.max(1), batch]);
        d.variant = p.mode;
        d
    }

    /// A [`Kernel::AttentionBackward`] launch over `batch` sequences.
    pub fn attention_backward(p: AttentionBackwardParams, batch: u32) -> Self {
        let x = (p.heads * (p.tq + p.tk)).div_ceil(ATTENTION_WORKGROUP_SIZE);
        let mut d = Self::new(Kernel::AttentionBackward, &p, [x.max(1), batch]);
        d.variant = p.mode;
        d
    }

    /// A [`Kernel::Embedding`] launch.
    pub fn embedding(p: EmbeddingParams) -> Self {
        Self::new(Kernel::Embedding, &p, grid_1d(p.m * p.n))
    }

    /// A [`Kernel::EmbeddingBackward`] launch over a `vocab`-row table.
    pub fn embedding_backward(p: EmbeddingBackwardParams, vocab: u32) -> Self {
        Self::new(Kernel::EmbeddingBackward, &p, [vocab, 1])
    }

    /// A [`Kernel::CrossEntropy`] launch.
    pub fn cross_entropy(p: CrossEntropyParams) -> Self {
        Self::new(Kernel::CrossEntropy, &p, grid_1d(p.m))
    }

    /// A [`Kernel::AdamW`] launch.
    /// All offsets and `decay_from` must be multiples of 4; `n` is rounded
    /// up to one, so the run's padding must lie inside the arena.
    pub fn adamw(p: AdamWParams) -> Self {
        debug_assert!(
            [p.p_off, p.g_off, p.m_off, p.v_off, p.decay_from]
                .iter()
                .all(|o| o.is_multiple_of(4)),
            "{p:?}"
        );
        let p = AdamWParams {
            n: p.n.next_multiple_of(4),
            ..p
        };
        Self::new(Kernel::AdamW, &p, grid_1d(p.n / 4))
    }

    /// A [`Kernel::GateBackward`] launch.
    pub fn gate_backward(p: GateBackwardParams) -> Self {
        Self::new(Kernel::GateBackward, &p, [1, 1])
    }

    /// A [`Kernel::SumRows`] launch.
    pub fn sum_rows(p: SumRowsParams) -> Self {
        Self::new(Kernel::SumRows, &p, grid_1d(p.rows * p.n))
    }

    /// A [`Kernel::GatherRows`] launch.
    pub fn gather_rows(p: GatherRowsParams) -> Self {
        Self::new(Kernel::GatherRows, &p, grid_1d(p.slots * p.block / 4))
    }

    /// A [`Kernel::VisionEmbed`] launch.
    pub fn vision_embed(p: VisionEmbedParams) -> Self {
        Self::new(Kernel::VisionEmbed, &p, grid_1d(p.images * p.tokens * p.n))
    }
}

/// Every toy pipeline for one device, with the shared bind group layouts.
/// Create once; [`Program`]s borrow it.
#[derive(Debug)]
pub struct Kernels {
    device: wgpu::Device,
    storage_layout: wgpu::BindGroupLayout,
    params_layout: wgpu::BindGroupLayout,
    layout: wgpu::PipelineLayout,
    modules: HashMap<Kernel, wgpu::ShaderModule>,
    /// Pipelines by kernel and variant; variants other than 0 are built on
    /// first use by [`Program::new`].
    pipelines: Mutex<HashMap<(Kernel, u32), wgpu::ComputePipeline>>,
    /// Whether matmul and attention launches that fit run on the subgroup
    /// kernels.
    subgroups: bool,
}

impl Kernels {
    /// Compiles every kernel for `device`. Fails with [`ToyError::Device`]
    /// when the device allows fewer than 3 storage buffers per stage or a
    /// pipeline fails validation.
    ///
    /// On a CPU driver whose subgroups are exactly [`SUBGROUP_LANES`] wide,
    /// opened with [`wgpu::Features::SUBGROUP`] (lavapipe, which
    /// [`super::native::open_device`] opens so), the matmul, weight-gradient
    /// and attention launches that fit run on their subgroup kernels
    /// ([`Kernel::needs_subgroups`]); everywhere else on the portable ones.
    pub async fn new(device: &wgpu::Device) -> Result<Self, ToyError> {
        let info = device.adapter_info();
        let subgroups = device.features().contains(wgpu::Features::SUBGROUP)
            && info.device_type == wgpu::DeviceType::Cpu
            && info.subgroup_min_size == SUBGROUP_LANES
            && info.subgroup_max_size == SUBGROUP_LANES;
        Self::build(device, subgroups).await
    }

    /// As [`Kernels::new`], but with the portable kernels only, whatever
    /// the device offers.
    pub async fn portable(device: &wgpu::Device) -> Result<Self, ToyError> {
        Self::build(device, false).await
    }

    /// Whether launches that fit run on the subgroup kernels.
    pub fn uses_subgroups(&self) -> bool {
        self.subgroups
    }

    async fn build(device: &wgpu::Device, subgroups: bool) -> Result<Self, ToyError> {
        let limits = device.limits();
        if limits.max_storage_buffers_per_shader_stage < 3
            || limits.max_compute_invocations_per_workgroup < WORKGROUP_SIZE
        {
            return Err(ToyError::Device(format!(
                "the toy kernels need 3 storage buffers per stage and {WORKGROUP_SIZE} \
                 invocations per workgroup"
            )));
        }
        let storage = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: false },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let storage_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("wgpu_gradclip.toy.storage"),
            entries: &[storage(0), storage(2)],
        });
        let params_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("wgpu_gradclip.toy.params"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: wgpu::BufferSize::new(PARAMS_STRIDE),
                },
                count: None,
            }],
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("wgpu_gradclip.toy.layout"),
            bind_group_layouts: &[Some(&storage_layout), Some(&params_layout)],
            immediate_size: 0,
        });

        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut modules = HashMap::new();
        let built = Kernel::ALL
            .into_iter()
            .filter(|k| subgroups || !k.needs_subgroups());
        for kernel in built.clone() {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(kernel.name()),
                source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
            };
            modules.insert(kernel, device.create_shader_module(desc));
        }
        let kernels = Self {
            device: device.clone(),
            storage_layout,
            params_layout,
            layout,
            modules,
            pipelines: Mutex::new(HashMap::new()),
            subgroups,
        };
        for kernel in built {
            kernels.pipeline(kernel, 0);
        }
        if let Some(err) = scope.pop().await {
            return Err(ToyError::Device(err.to_string()));
        }
        Ok(kernels)
    }

    /// The pipeline of `kernel` specialised as `variant`, built on first use.
    fn pipeline(&self, kernel: Kernel, variant: u32) -> wgpu::ComputePipeline {
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        pipelines
            .entry((kernel, variant))
            .or_insert_with(|| {
                let constants = kernel.constants(variant);
                self.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(kernel.name()),
                        layout: Some(&self.layout),
                        module: &self.modules[&kernel],
                        entry_point: Some(kernel.name()),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants: &constants,
                            ..Default::default()
                        },
                        cache: None,
                    })
            })
            .clone()
    }

    /// The subgroup kernel and grid that take over `d`, when one of them
    /// can run it here: for matrix products, one subgroup per 32 x 16 block
    /// of the output; for attention, the portable grid, whose subgroups are
    /// 8 queries (or keys) of one head.
    fn subgroup_launch(&self, d: &Dispatch) -> Option<(Kernel, [u32; 2])> {
        if !self.subgroups {
            return None;
        }
        let (kernel, blocks) = match d.kernel {
            Kernel::Linear => {
                let p = d.params_as::<LinearParams>()?;
                if p.n == 0 || !p.n.is_multiple_of(LINEAR_SUBGROUP_COLS) {
                    return None;
                }
                let rows = p.m.div_ceil(SUBGROUP_LANES * LINEAR_SUBGROUP_ROWS);
                (Kernel::LinearSubgroup, rows * (p.n / LINEAR_SUBGROUP_COLS))
            }
            Kernel::LinearGradWeight => {
                let p = d.params_as::<LinearGradWeightParams>()?;
                let [bn, bk] = GRAD_WEIGHT_SUBGROUP_BLOCK;
                if p.n == 0 || p.k == 0 || !p.n.is_multiple_of(bn) || !p.k.is_multiple_of(bk) {
                    return None;
                }
                (Kernel::LinearGradWeightSubgroup, (p.n / bn) * (p.k / bk))
            }
            Kernel::Attention => {
                let p = d.params_as::<AttentionParams>()?;
                return p
                    .tq
                    .is_multiple_of(SUBGROUP_LANES)
                    .then_some((Kernel::AttentionSubgroup, d.grid));
            }
            Kernel::AttentionBackward => {
                let p = d.params_as::<AttentionBackwardParams>()?;
                return (p.tq.is_multiple_of(SUBGROUP_LANES)
                    && p.tk.is_multiple_of(SUBGROUP_LANES))
                .then_some((Kernel::AttentionBackwardSubgroup, d.grid));
            }
            _ => return None,
        };
        let workgroup = match kernel {
            Kernel::LinearSubgroup => LINEAR_WORKGROUP_SIZE,
            _ => GRAD_WEIGHT_WORKGROUP_SIZE,
        };
        let wgs = (blocks * SUBGROUP_LANES).div_ceil(workgroup);
        Some((kernel, [wgs.max(1), 1]))
    }

    /// The device the kernels were built for.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }
}

/// The storage every dispatch binds: the f32 arena and the per-step ints.
#[derive(Debug)]
pub struct Memory {
    /// The f32 arena: weights, gradients, activations, optimizer state.
    pub mem: wgpu::Buffer,
    /// Per-step integer data.
    pub ints: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

impl Memory {
    /// Allocates an arena of `floats` f32s and `words` u32s, zeroed. Fails
    /// with [`ToyError::Device`] when the arena exceeds the device's largest
    /// storage binding.
    pub fn new(kernels: &Kernels, floats: u64, words: u64) -> Result<Self, ToyError> {
        let device = &kernels.device;
        let max = device.limits().max_storage_buffer_binding_size;
        let bytes = (floats.max(4) * 4).next_multiple_of(16);
        if bytes > max {
            return Err(ToyError::Device(format!(
                "the model needs a {bytes}-byte storage binding; the device allows {max}"
            )));
        }
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let mem = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu_gradclip.toy.mem"),
            size: bytes,
            usage,
            mapped_at_creation: false,
        });
        let ints = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu_gradclip.toy.ints"),
            size: (words.max(4) * 4).next_multiple_of(16),
            usage,
            mapped_at_creation: false,
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("wgpu_gradclip.toy.storage"),
            layout: &kernels.storage_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: mem.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: ints.as_entire_binding(),
                },
            ],
        });
        Ok(Self {
            mem,
            ints,
            bind_group,
        })
    }
}

/// A fixed list of dispatches with their uniform blocks uploaded once.
#[derive(Debug)]
pub struct Program {
    dispatches: Vec<(wgpu::ComputePipeline, [u32; 2])>,
    params_bind_group: wgpu::BindGroup,
}

impl Program {
    /// Uploads the uniform blocks of `dispatches`.
    pub fn new(kernels: &Kernels, dispatches: &[Dispatch]) -> Self {
        let mut blocks = vec![0u8; (dispatches.len().max(1) as u64 * PARAMS_STRIDE) as usize];
        for (i, d) in dispatches.iter().enumerate() {
            let at = i * PARAMS_STRIDE as usize;
            blocks[at..at + d.params.len()].copy_from_slice(&d.params);
        }
        let buffer = kernels
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("wgpu_gradclip.toy.params"),
                contents: &blocks,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let params_bind_group = kernels
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgpu_gradclip.toy.params"),
                layout: &kernels.params_layout,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &buffer,
                        offset: 0,
                        size: wgpu::BufferSize::new(PARAMS_STRIDE),
                    }),
                }],
            });
        Self {
            dispatches: dispatches
                .iter()
                .map(|d| match kernels.subgroup_launch(d) {
                    Some((kernel, grid)) => (kernels.pipeline(kernel, d.variant), grid),
                    None => (kernels.pipeline(d.kernel, d.variant), d.grid),
                })
                .collect(),
            params_bind_group,
        }
    }

    /// Number of compute dispatches [`Program::record`] issues.
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    /// Whether the program has no dispatches.
    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    /// Records every dispatch, in order, into one compute pass of `encoder`.
    pub fn record(&self, memory: &Memory, encoder: &mut wgpu::CommandEncoder) {
        if self.dispatches.is_empty() {
            return;
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgpu_gradclip.toy.program"),
            timestamp_writes: None,
        });
        pass.set_bind_group(0, &memory.bind_group, &[]);
        for (i, (pipeline, grid)) in self.dispatches.iter().enumerate() {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(
                1,
                &self.params_bind_group,
                &[(i as u64 * PARAMS_STRIDE) as u32],
            );
            pass.dispatch_workgroups(grid[0], grid[1], 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiply_adds_of_the_matrix_products() {
        let lin = Dispatch::linear(LinearParams::new(
            24,
            64,
            256,
            RowMap::dense(0, 64),
            4096,
            RowMap::dense(65536, 256),
        ));
        assert_eq!(lin.multiply_adds(), 24 * 256 * 64);
        let mut gw: LinearGradWeightParams = bytemuck::Zeroable::zeroed();
        gw.m = 384;
        gw.n = 64;
        gw.k = 256;
        gw.dy = RowMap::dense(0, 64);
        gw.x = RowMap::dense(0, 256);
        assert_eq!(
            Dispatch::linear_grad_weight(gw).multiply_adds(),
            384 * 64 * 256
        );
        let mut broken = lin.clone();
        broken.params.pop();
        assert_eq!(broken.multiply_adds(), 0);
    }
}
