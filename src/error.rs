//! The crate's error type.

/// Everything that can go wrong when planning, recording or reading back a
/// clip. Errors about input name the group (by name) and the view (by its
/// index inside that group); when one is returned, no buffer of the caller
/// has been written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `max_norm` must be finite and greater than zero.
    #[error("max_norm must be finite and > 0, got {0}")]
    InvalidMaxNorm(f32),

    /// The norm order must satisfy `1 <= p <= 200`, or be `Norm::Inf`.
    #[error("norm order p must be in [1, 200] (use Norm::Inf for the max norm), got {0}")]
    InvalidNormOrder(f32),

    /// `eps` must be finite and not negative.
    #[error("eps must be finite and >= 0, got {0}")]
    InvalidEps(f32),

    /// A value-clipping bound must be greater than zero (infinity is allowed).
    #[error("clip_value must be > 0, got {0}")]
    InvalidClipValue(f32),

    /// A view's byte offset is not a multiple of 4.
    #[error("group `{group}` view {view}: byte offset {offset} is not a multiple of 4")]
    MisalignedView {
        group: String,
        view: usize,
        offset: u64,
    },

    /// A view reaches past the end of its buffer.
    #[error(
        "group `{group}` view {view}: bytes {start}..{end} lie outside its buffer of {size} bytes"
    )]
    ViewOutOfRange {
        group: String,
        view: usize,
        start: u64,
        end: u64,
        size: u64,
    },

    /// The view's buffer was not created with `BufferUsages::STORAGE`.
    #[error("group `{group}` view {view}: its buffer lacks STORAGE usage (has {usage:?})")]
    MissingStorageUsage {
        group: String,
        view: usize,
        usage: wgpu::BufferUsages,
    },

    /// The view's buffer belongs to a different device than the clipper.
    #[error("group `{group}` view {view}: its buffer belongs to another device ({message})")]
    ForeignBuffer {
        group: String,
        view: usize,
        message: String,
    },

    /// The device rejects the view's buffer as invalid: its creation
    /// failed (for example, out of memory) or it was destroyed.
    #[error(
        "group `{group}` view {view}: its buffer is invalid: its creation failed \
         (for example out of memory) or it was destroyed ({message})"
    )]
    InvalidBuffer {
        group: String,
        view: usize,
        message: String,
    },

    /// Two views share bytes. Clipping an element twice would scale it by
    /// the coefficient squared, so this is refused.
    #[error(
        "group `{first_group}` view {first_view} overlaps group `{second_group}` view {second_view}"
    )]
    OverlappingViews {
        first_group: String,
        first_view: usize,
        second_group: String,
        second_view: usize,
    },

    /// The plan exceeds what its tables can address.
    #[error("plan too large: {0}")]
    PlanTooLarge(String),

    /// The device cannot run the kernels (too few storage buffers or
    /// invocations per workgroup).
    #[error("device unsupported: {0}")]
    UnsupportedDevice(String),

    /// A report was asked for but none was recorded since the last read.
    #[error("no report was recorded: call record_report before submitting")]
    ReportNotRecorded,

    /// A report read is still in flight for this plan.
    #[error("a report read for this plan is still in flight")]
    ReportPending,

    /// Gradients held NaN or infinity under the error policy; no gradient
    /// was changed. Lists the offending groups.
    #[error("non-finite gradient norm in group(s) {}", groups.join(", "))]
    NonFinite { groups: Vec<String> },

    /// Mapping the readback buffer failed, usually because the device was lost.
    #[error("reading results back failed: {0}")]
    Readback(String),

    /// The device ran out of memory while the plan was being made.
    #[error("out of device memory: {0}")]
    OutOfMemory(String),

    /// wgpu reported an error (validation, internal, device lost).
    #[error("wgpu error: {0}")]
    Wgpu(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
