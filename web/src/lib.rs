//! The browser side of wgpu-gradclip: a page that trains the tiny
//! Flamingo-style model on WebGPU, and the helpers its tests share.
//!
//! Everything here is asynchronous. The browser never lets a page block on
//! the GPU, so every readback is awaited, and the device keeps WebGPU's
//! default limits.

pub mod console;
#[cfg(feature = "toy")]
pub mod demo;
pub mod gpu;
