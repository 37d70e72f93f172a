//! Native-only helpers: opening the adapter the environment asks for, and
//! writing checkpoints, images, plots, metrics and dataset dumps. Nothing
//! in the trainer depends on this module, so the browser build leaves it
//! out.

use super::ToyError;

/// Opens the adapter chosen by `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` (or the
/// default one) with WebGPU's default limits, and returns its device,
/// queue and a one-line description.
///
/// Fails with [`ToyError::Device`] when no adapter is found; on a machine
/// without a GPU, `apt-get install mesa-vulkan-drivers` provides one.
pub async fn open_device() -> Result<(wgpu::Device, wgpu::Queue, String), ToyError> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = wgpu::util::initialize_adapter_from_env_or_default(&instance, None)
        .await
        .map_err(|e| {
            ToyError::Device(format!(
                "no GPU adapter found ({e}); install a driver, e.g. `apt-get install \
                 mesa-vulkan-drivers` for the CPU Vulkan driver, or check WGPU_BACKEND / \
                 WGPU_ADAPTER_NAME"
            ))
        })?;
    let info = adapter.get_info();
    let name = format!("{} ({:?})", info.name, info.backend);
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("wgpu_gradclip.toy"),
            required_limits: wgpu::Limits::default(),
            ..Default::default()
        })
        .await
        .map_err(|e| ToyError::Device(format!("{name}: {e}")))?;
    log::info!("wgpu_gradclip.toy: adapter {name}");
    Ok((device, queue, name))
}
