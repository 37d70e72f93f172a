//! Gradient-norm clipping on any WebGPU device, in WGSL compute shaders.
//!
//! The gradients stay where they are, in the caller's storage buffers. A
//! clip reduces their norms as a fixed tree, turns them into coefficients
//! and scales the gradients in place, all on the GPU: nothing is read back
//! unless the caller asks for a report. Both of OpenFlamingo's modes are
//! covered by one plan:
//!
//! - [`ClipMode::Global`] (DDP): one norm over every group, one coefficient;
//! - [`ClipMode::PerGroup`] (FSDP): each group is clipped by its own norm.
//!
//! # Semantics
//!
//! As PyTorch's `torch.nn.utils.clip_grad_norm_`: for a norm order `p`,
//! `norm = ||(||g_1||_p, ..., ||g_n||_p)||_p`, `c = min(1, max_norm / (norm +
//! eps))`, and every gradient is multiplied by `c`. A NaN norm gives a NaN
//! coefficient, an infinite one a coefficient of 0. Differences:
//!
//! - where `c == 1` the gradients are not written at all (the GPU decides);
//! - the norm is finite for every finite input, up to `f32::MAX` (PyTorch's
//!   plain sum of squares overflows);
//! - `max_norm <= 0`, NaN `max_norm` and `p < 1` are errors, not silent
//!   sign flips;
//! - [`NonFinitePolicy::Error`] leaves every gradient untouched without a
//!   host sync, and the report names the offending groups.
//!
//! # The engine path
//!
//! ```no_run
//! # async fn demo(device: wgpu::Device, queue: wgpu::Queue, grads: wgpu::Buffer) -> wgpu_gradclip::Result<()> {
//! use wgpu_gradclip::{ClipConfig, ClipGroup, ClipMode, GradClipper, GradView};
//!
//! let clipper = GradClipper::new(&device)?; // layouts once; pipelines cached
//! let groups = [
//!     ClipGroup::new("perceiver", [GradView::new(&grads, 0, 4096)]),
//!     ClipGroup::new("gated_cross_attn_layers.0", [GradView::new(&grads, 16384, 1000)]),
//! ];
//! let plan = clipper.plan(&groups, &ClipConfig::new(1.0).mode(ClipMode::PerGroup))?;
//!
//! // Every step: recorded into the caller's encoder, no host round trip.
//! let mut encoder = device.create_command_encoder(&Default::default());
//! plan.record(&mut encoder);
//! plan.record_report(&mut encoder)?; // optional, for logging
//! queue.submit([encoder.finish()]);
//! let report = plan.read_report().await?;
//! println!("total norm {}", report.total_norm);
//! # Ok(()) }
//! ```

mod error;
mod pipelines;
mod plan;
mod record;
pub mod reference;
mod report;
pub mod shaders;

pub use error::{Error, Result};
pub use pipelines::GradClipper;
pub use record::{ClipPlan, ValueClipPlan};
pub use report::{ClipReport, GroupReport, PowerSum};

/// Elements per workgroup chunk unless [`ClipConfig::chunk_elements`] says
/// otherwise: large enough to amortise a workgroup's start and final
/// reduction, small enough to give a big GPU thousands of workgroups.
pub const DEFAULT_CHUNK_ELEMENTS: u32 = 16384;

/// A run of f32 gradient elements inside a storage buffer.
///
/// Many views may share one buffer (an arena) as long as they do not
/// overlap. The buffer needs `BufferUsages::STORAGE`; `offset` is in bytes
/// and must be a multiple of 4 (the device's storage offset alignment is
/// not needed); `len` counts f32 elements. A view may be larger than the
/// device's largest storage binding.
#[derive(Clone, Debug)]
pub struct GradView {
    /// The buffer holding the gradients.
    pub buffer: wgpu::Buffer,
    /// Byte offset of the first element; a multiple of 4.
    pub offset: u64,
    /// Number of f32 elements.
    pub len: u64,
}

impl GradView {
    /// A view of `len` f32 elements starting `offset` bytes into `buffer`.
    pub fn new(buffer: &wgpu::Buffer, offset: u64, len: u64) -> Self {
        Self {
            buffer: buffer.clone(),
            offset,
            len,
        }
    }

    /// A view of the whole buffer, as f32 elements.
    pub fn whole(buffer: &wgpu::Buffer) -> Self {
        Self::new(buffer, 0, buffer.size() / 4)
    }
}

/// A named set of views clipped together (in per-group mode, by their own
/// norm). OpenFlamingo's FSDP groups are `perceiver`,
/// `gated_cross_attn_layers.<i>` and `input_embeddings`.
#[derive(Clone, Debug)]
pub struct ClipGroup {
    /// Used in reports and error messages.
    pub name: String,
    /// The group's gradients; may be empty.
    pub views: Vec<GradView>,
}

impl ClipGroup {
    /// A group named `name` over `views`.
    pub fn new(name: impl Into<String>, views: impl IntoIterator<Item = GradView>) -> Self {
        Self {
            name: name.into(),
            views: views.into_iter().collect(),
        }
    }
}

/// The norm order, PyTorch's `norm_type`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Norm {
    /// The Euclidean norm, `norm_type = 2.0` (the default).
    L2,
    /// The max norm, `norm_type = inf`.
    Inf,
    /// Any finite `p` with `1 <= p <= 200`; `P(1.0)` and `P(2.0)` take the
    /// same fast paths as the dedicated kernels.
    P(f32),
}

/// How groups share coefficients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipMode {
    /// One norm over all groups, one coefficient for all (DDP mode,
    /// `clip_grad_norm_` over every parameter).
    Global,
    /// Each group clipped by its own norm (OpenFlamingo's FSDP mode).
    PerGroup,
}

/// What happens when a norm is NaN or infinite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonFinitePolicy {
    /// PyTorch's default: a NaN norm makes every gradient of the clip NaN,
    /// an infinite one zeroes finite gradients (and turns infinite ones
    /// into NaN).
    Propagate,
    /// PyTorch's `error_if_nonfinite=True`, without the host sync: if any
    /// group is non-finite no gradient is changed, the report's `skipped`
    /// is set and [`ClipReport::check_finite`] names the groups.
    Error,
}

/// Settings of a norm clip. Build with [`ClipConfig::new`] and the setters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipConfig {
    /// Largest allowed norm; finite and > 0.
    pub max_norm: f32,
    /// Norm order (default [`Norm::L2`]).
    pub norm: Norm,
    /// Global or per-group (default [`ClipMode::Global`]).
    pub mode: ClipMode,
    /// Non-finite handling (default [`NonFinitePolicy::Propagate`]).
    pub nonfinite: NonFinitePolicy,
    /// Added to the norm before dividing (default 1e-6, as PyTorch).
    pub eps: f32,
    /// Elements per workgroup; rounded down to a multiple of 4 (default
    /// [`DEFAULT_CHUNK_ELEMENTS`]). Smaller chunks give more workgroups.
    pub chunk_elements: u32,
}

impl ClipConfig {
    /// L2 norm, global mode, propagate non-finite values, eps 1e-6.
    pub fn new(max_norm: f32) -> Self {
        Self {
            max_norm,
            norm: Norm::L2,
            mode: ClipMode::Global,
            nonfinite: NonFinitePolicy::Propagate,
            eps: 1e-6,
            chunk_elements: DEFAULT_CHUNK_ELEMENTS,
        }
    }

    /// Sets the norm order.
    pub fn norm(mut self, norm: Norm) -> Self {
        self.norm = norm;
        self
    }

    /// Sets global or per-group clipping.
    pub fn mode(mut self, mode: ClipMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the non-finite policy.
    pub fn nonfinite(mut self, policy: NonFinitePolicy) -> Self {
        self.nonfinite = policy;
        self
    }

    /// Sets eps.
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }

    /// Sets the elements per workgroup.
    pub fn chunk_elements(mut self, n: u32) -> Self {
        self.chunk_elements = n;
        self
    }
}

/// PyTorch's `clip_grad_norm_(grads, max_norm, norm_type)` in one call:
/// clips `grads` as one global group, waits, and returns the total norm
/// before clipping.
///
/// It builds a [`GradClipper`] and a plan on every call; in a training loop
/// keep a [`ClipPlan`] instead. Blocks until the GPU is done, so it exists
/// on native targets only; see [`clip_grad_norm_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn clip_grad_norm(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    grads: &[GradView],
    max_norm: f32,
    norm: Norm,
) -> Result<f32> {
    pollster::block_on(clip_grad_norm_async(device, queue, grads, max_norm, norm))
}

/// The asynchronous form of [`clip_grad_norm`], usable in the browser.
pub async fn clip_grad_norm_async(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    grads: &[GradView],
    max_norm: f32,
    norm: Norm,
) -> Result<f32> {
    let clipper = GradClipper::new(device)?;
    let group = ClipGroup::new("all", grads.iter().cloned());
    let plan = clipper.plan(&[group], &ClipConfig::new(max_norm).norm(norm))?;
    Ok(plan.run(queue).await?.total_norm as f32)
}

/// PyTorch's `clip_grad_value_(grads, clip_value)` in one call: clamps every
/// element to `[-clip_value, clip_value]` and waits. Native only.
#[cfg(not(target_arch = "wasm32"))]
pub fn clip_grad_value(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    grads: &[GradView],
    clip_value: f32,
) -> Result<()> {
    let clipper = GradClipper::new(device)?;
    let plan = clipper.plan_value(&[ClipGroup::new("all", grads.iter().cloned())], clip_value)?;
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("wgpu_gradclip.clip_grad_value"),
    });
    plan.record(&mut encoder);
    queue.submit([encoder.finish()]);
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Wgpu(e.to_string()))?;
    Ok(())
}

// The README's examples are compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
