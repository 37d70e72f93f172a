//! The naga check shared by the shader tests: parse and validate a WGSL
//! module, keep it within WebGPU's default workgroup memory, then translate
//! each entry point to SPIR-V, MSL, HLSL and GLSL with the given override
//! constants. A shader that one backend would reject fails here, on any
//! machine, without a GPU.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

// Only the clipping shaders' test crate calls this one.
#[allow(dead_code)]
pub fn check_module(name: &str, source: &str, entry_points: &[&str], constants: &[(&str, f64)]) {
    check_module_with(name, source, entry_points, constants, Capabilities::empty());
}

/// As `check_module`, for a module that needs `capabilities` (subgroup
/// operations, say) of the device.
pub fn check_module_with(
    name: &str,
    source: &str,
    entry_points: &[&str],
    constants: &[(&str, f64)],
    capabilities: Capabilities,
) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: parse error\n{}", e.emit_to_string(source)));
    let info = Validator::new(ValidationFlags::all(), capabilities)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: validation error\n{}", e.emit_to_string(source)));

    // WebGPU's default limit on workgroup memory.
    let shared: u32 = module
        .global_variables
        .iter()
        .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
        .map(|(_, g)| module.types[g.ty].inner.size(module.to_ctx()))
        .sum();
    assert!(
        shared <= 16384,
        "{name}: {shared} bytes of workgroup memory"
    );

    let mut pipeline_constants = naga::back::PipelineConstants::default();
    for &(k, v) in constants {
        pipeline_constants.insert(k.to_string(), v);
    }
    for &entry in entry_points {
        let ep = Some((naga::ShaderStage::Compute, entry));
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            ep,
            &pipeline_constants,
        )
        .unwrap_or_else(|e| panic!("{name}/{entry}: overrides: {e}"));
        let ctx = format!("{name}/{entry} {constants:?}");

        spv::write_vec(
            &module,
            &info,
            &spv::Options::default(),
            Some(&spv::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: entry.into(),
            }),
        )
        .unwrap_or_else(|e| panic!("{ctx}: SPIR-V: {e}"));

        msl::write_string(
            &module,
            &info,
            &msl::Options::default(),
            &msl::PipelineOptions {
                entry_point: Some((naga::ShaderStage::Compute, entry.into())),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{ctx}: MSL: {e}"));

        let mut hlsl_out = String::new();
        let hlsl_options = hlsl::Options::default();
        let hlsl_pipeline = hlsl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, entry.into())),
        };
        hlsl::Writer::new(&mut hlsl_out, &hlsl_options, &hlsl_pipeline)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{ctx}: HLSL: {e}"));

        let mut glsl_out = String::new();
        let glsl_options = glsl::Options::default();
        let glsl_pipeline = glsl::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: entry.into(),
            multiview: None,
        };
        glsl::Writer::new(
            &mut glsl_out,
            &module,
            &info,
            &glsl_options,
            &glsl_pipeline,
            naga::proc::BoundsCheckPolicies::default(),
        )
        .and_then(|mut w| w.write())
        .unwrap_or_else(|e| panic!("{ctx}: GLSL: {e}"));
    }
}
