//! Every WGSL kernel, in every variant the library builds, is parsed and
//! validated by naga and translated to SPIR-V, MSL, HLSL and GLSL. A shader
//! that one backend would reject fails here, on any machine, without a GPU.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpu_gradclip::shaders::{compose, GradAccess, Kernel, MAX_GRAD_SLOTS};

/// NORM_KIND values: max norm, p = 1, p = 2, general p.
const NORM_KINDS: [u32; 4] = [0, 1, 2, 3];

fn check_module(name: &str, source: &str, entry_points: &[&str], constants: &[(&str, f64)]) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: parse error\n{}", e.emit_to_string(source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: validation error\n{}", e.emit_to_string(source)));

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

#[test]
fn clipping_kernels_validate_and_translate_everywhere() {
    for kernel in Kernel::ALL {
        for access in [GradAccess::Vec4, GradAccess::Scalar] {
            // 1 and 2 slots: devices with few storage buffers; 6: WebGPU's
            // default of 8 minus the two tables; 8: the cap.
            for slots in [1, 2, 6, MAX_GRAD_SLOTS] {
                let source = compose(kernel, access, slots);
                let name = format!("{kernel:?}/{access:?}/{slots} slots");
                for kind in NORM_KINDS {
                    check_module(
                        &name,
                        &source,
                        kernel.entry_points(),
                        &[("NORM_KIND", f64::from(kind))],
                    );
                }
                if !kernel.uses_grads() {
                    break;
                }
            }
        }
    }
}
